//! `kvpilot crdgen --dir DIR`: writes one YAML file per CRD (`crds/` holds its output).

use crate::api::crd;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct CrdgenArgs {
    /// Directory to write `<plural>.kvpilot.dev.yaml` files into (created if missing).
    #[arg(long, default_value = "crds")]
    pub dir: PathBuf,
}

pub async fn run(args: CrdgenArgs) -> Result<ExitCode, String> {
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| format!("cannot create {}: {e}", args.dir.display()))?;
    for definition in crd::definitions() {
        let path = args.dir.join(crd::file_name(&definition));
        let text = crd::to_yaml(&definition)
            .map_err(|e| format!("cannot render {}: {e}", path.display()))?;
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_one_file_per_crd() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("crds");
        let code = run(CrdgenArgs { dir: out.clone() }).await.unwrap();
        assert_eq!(code, ExitCode::SUCCESS);
        let mut names: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "kvclusters.kvpilot.dev.yaml",
                "policyplugins.kvpilot.dev.yaml"
            ]
        );
    }
}
