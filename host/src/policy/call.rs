//! Calling a plugin: a fresh store per call from the plugin's instance template, an epoch
//! deadline plus an async timeout, a memory cap, a bounded answer, and answer validation.
//! An instance is used for one call only, so a trapped instance is never re-entered.

use super::contract::v0_1_0::exports::kvpilot::policy::{
    plugin as plugin_if, replica_selection as rs, rollout_order as ro, snapshot_schedule as ss,
};
use super::memo::{Answer, Asked};
use super::plugin::{Compiled, Exports, Limits, Plugin};
use super::runtime::BINDINGS_VERSION;
use super::sandbox::Sandbox;
use super::{Hook, PolicyError, convert, logs, text, validate};
use kvpilot_sdk::cron::Cron;
use kvpilot_sdk::{
    MemberSchedule, PluginInfo, RolloutRequest, ScheduleRequest, Selection, SelectionRequest, Step,
};
use std::time::Duration;
use wasmtime::component::{
    ComponentExportIndex, ComponentNamedList, ComponentType, Func, InstancePre, Lift, Lower,
};
use wasmtime::{Engine, Store, Trap};

/// The hook functions' parameters (the host's borrowed request views) and answers. The check
/// at load ([`inspect`]) and every call ([`Plugin::call_hook`]) use the same types.
type SelectParams<'a> = (&'a convert::SelectionRef<'a>,);
type SelectAnswer = rs::Decision;
type ScheduleParams<'a> = (&'a convert::ScheduleRef<'a>,);
type ScheduleAnswer = Vec<ss::MemberSchedule>;
type NextParams<'a> = (&'a convert::RolloutRef<'a>,);
type NextAnswer = ro::Step;
/// What a hook function returns: its answer or the plugin's own error.
type Results<A> = (Result<A, String>,);

/// Slack of the async timeout over the epoch deadline: the epoch trap is the precise bound
/// for guest code; the async timeout covers time the guest spends awaiting the host.
const ASYNC_GRACE: Duration = Duration::from_millis(20);

/// What went wrong in one call, before it is attributed to a plugin and hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    Trap(String),
    Timeout(u64),
    Memory(u64),
}

impl Failure {
    pub(crate) fn into_error(self, plugin: &str, hook: Hook) -> PolicyError {
        let plugin = plugin.to_string();
        match self {
            Failure::Trap(message) => PolicyError::Trap {
                plugin,
                hook,
                message,
            },
            Failure::Timeout(after_ms) => PolicyError::Timeout {
                plugin,
                hook,
                after_ms,
            },
            Failure::Memory(limit_mib) => PolicyError::Memory {
                plugin,
                hook,
                limit_mib,
            },
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Trap(message) => write!(f, "trapped: {message}"),
            Failure::Timeout(ms) => write!(f, "timed out after {ms} ms"),
            Failure::Memory(mib) => write!(f, "exceeded its memory limit of {mib} MiB"),
        }
    }
}

/// A store for one call: memory cap and epoch deadline set.
fn new_store(engine: &Engine, limits: &Limits) -> Store<Sandbox> {
    let mut store = Store::new(engine, Sandbox::new(limits.memory_bytes));
    store.limiter(|sandbox| sandbox);
    // The ticker advances the epoch once per millisecond.
    store.set_epoch_deadline(u64::try_from(limits.timeout.as_millis()).unwrap_or(u64::MAX));
    store.epoch_deadline_trap();
    store
}

/// Names what happened, using what the sandbox saw (memory refusal, guest stderr).
fn classify<T>(
    store: &Store<Sandbox>,
    limits: &Limits,
    outcome: Result<wasmtime::Result<T>, tokio::time::error::Elapsed>,
) -> Result<T, Failure> {
    let timeout_ms = u64::try_from(limits.timeout.as_millis()).unwrap_or(u64::MAX);
    let error = match outcome {
        Ok(Ok(value)) => return Ok(value),
        Err(_elapsed) => return Err(Failure::Timeout(timeout_ms)),
        Ok(Err(error)) => error,
    };
    if store.data().memory_exceeded() {
        return Err(Failure::Memory(limits.memory_mib()));
    }
    if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        return Err(Failure::Timeout(timeout_ms));
    }
    let what = if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
        format!("the guest called exit({})", exit.0)
    } else if let Some(trap) = error.downcast_ref::<Trap>() {
        trap.to_string()
    } else {
        error.root_cause().to_string()
    };
    let message = match store.data().stderr_text() {
        Some(stderr) => format!("{} ({what})", guest_message(&stderr)),
        None => what,
    };
    Err(Failure::Trap(text::clean(&message, text::MESSAGE_BYTES)))
}

/// The useful part of a guest's stderr, on one line, bounded: from the last Rust panic on
/// (without the backtrace hint), or else its end, which is what preceded the trap.
fn guest_message(stderr: &str) -> String {
    const MAX: usize = 2000;
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE"))
        .collect();
    let panic = lines.iter().rposition(|l| l.contains(" panicked at "));
    let joined = lines[panic.unwrap_or(0)..].join(" ");
    if joined.len() <= MAX {
        return joined;
    }
    if panic.is_some() {
        let mut end = MAX;
        while !joined.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &joined[..end])
    } else {
        let mut start = joined.len() - MAX;
        while !joined.is_char_boundary(start) {
            start += 1;
        }
        format!("…{}", &joined[start..])
    }
}

/// Runs `$body` against a fresh instance of `$pre` under `$limits`; evaluates to
/// `(Result<T, Failure>, Option<String>)`: the outcome and what the guest wrote to stderr.
macro_rules! guarded {
    ($engine:expr, $pre:expr, $limits:expr, |$store:ident, $instance:ident| $body:expr) => {{
        let limits: &Limits = $limits;
        let pre: &InstancePre<Sandbox> = $pre;
        let mut $store = new_store($engine, limits);
        let outcome = tokio::time::timeout(limits.timeout + ASYNC_GRACE, async {
            let $instance = pre.instantiate_async(&mut $store).await?;
            $body
        })
        .await;
        (
            classify(&$store, limits, outcome),
            $store.data().stderr_text(),
        )
    }};
}

/// Inspects a component being loaded, in one instance: checks the types of its hook
/// functions against the host's request and answer types, then calls `info()`. A plugin built
/// against another shape of the contract is thus refused when it is loaded rather than on its
/// first decision, with a message naming the hook.
pub(crate) async fn inspect(
    engine: &Engine,
    pre: &InstancePre<Sandbox>,
    exports: &Exports,
) -> Result<PluginInfo, String> {
    type Check = fn(Func, &Store<Sandbox>) -> wasmtime::Result<()>;
    let hooks: [(Hook, Option<ComponentExportIndex>, Check); 3] = [
        (Hook::ReplicaSelection, exports.replica_selection, |f, s| {
            f.typed::<SelectParams<'_>, Results<SelectAnswer>>(s)
                .map(drop)
        }),
        (Hook::SnapshotSchedule, exports.snapshot_schedule, |f, s| {
            f.typed::<ScheduleParams<'_>, Results<ScheduleAnswer>>(s)
                .map(drop)
        }),
        (Hook::RolloutOrder, exports.rollout_order, |f, s| {
            f.typed::<NextParams<'_>, Results<NextAnswer>>(s).map(drop)
        }),
    ];
    let inspected = guarded!(engine, pre, &Limits::default(), |store, instance| {
        for (hook, index, typecheck) in &hooks {
            let Some(index) = index else { continue };
            let func = instance
                .get_func(&mut store, index)
                .ok_or_else(|| wasmtime::format_err!("the {hook} export is not a function"))?;
            if let Err(e) = typecheck(func, &store) {
                return Ok(Err(format!(
                    "the {hook} hook does not have the type of {}@{BINDINGS_VERSION}: {e:#}",
                    super::contract::PACKAGE
                )));
            }
        }
        // The plugin interface's own functions, each checked by name, so that a wrong type
        // is reported as that function's and not as `info()`'s.
        let iface = format!("{}/plugin@{BINDINGS_VERSION}", super::contract::PACKAGE);
        type PluginCheck = fn(Func, &Store<Sandbox>) -> wasmtime::Result<()>;
        let functions: [(&str, PluginCheck); 2] = [
            ("info", |f, s| {
                f.typed::<(), (plugin_if::PluginInfo,)>(s).map(drop)
            }),
            ("validate-config", |f, s| {
                f.typed::<(&str,), Results<()>>(s).map(drop)
            }),
        ];
        let component = pre.component();
        for (name, typecheck) in functions {
            let func = component
                .get_export_index(None, &iface)
                .and_then(|i| component.get_export_index(Some(&i), name))
                .and_then(|index| instance.get_func(&mut store, index));
            let Some(func) = func else {
                return Ok(Err(format!("`{iface}` has no function `{name}`")));
            };
            if let Err(e) = typecheck(func, &store) {
                return Ok(Err(format!(
                    "the {name} function does not have the type of {}@{BINDINGS_VERSION}: {e:#}",
                    super::contract::PACKAGE
                )));
            }
        }
        let guest = exports.plugin.load(&mut store, &instance)?;
        guest.call_info(&mut store).await.map(Ok)
    })
    .0;
    match inspected {
        Ok(Ok(info)) => Ok(convert::info(info)),
        Ok(Err(mismatch)) => Err(mismatch),
        Err(failure) => Err(format!("info() {failure}")),
    }
}

impl Plugin {
    fn too_large(&self, hook: Hook, bytes: usize) -> Result<(), PolicyError> {
        if bytes > self.limits.answer_bytes {
            return Err(PolicyError::AnswerTooLarge {
                plugin: self.name.clone(),
                hook,
                bytes,
                limit: self.limits.answer_bytes,
            });
        }
        Ok(())
    }

    fn missing(&self, hook: Hook) -> PolicyError {
        PolicyError::MissingHook {
            plugin: self.name.clone(),
            hook,
        }
    }

    /// The guest's own `Err(message)`: refused like an answer beyond the answer bound, and
    /// cut to a status message's length (see `text.rs`).
    fn plugin_error(&self, hook: Hook, message: String) -> PolicyError {
        if let Err(e) = self.too_large(hook, message.len()) {
            return e;
        }
        PolicyError::Plugin {
            plugin: self.name.clone(),
            hook,
            message: text::clean(&message, text::MESSAGE_BYTES),
        }
    }

    fn invalid(&self, hook: Hook, invalid: validate::Invalid) -> PolicyError {
        PolicyError::InvalidAnswer {
            plugin: self.name.clone(),
            hook,
            field: text::clean(&invalid.field, text::NAME_BYTES),
            message: text::clean(&invalid.message, text::MESSAGE_BYTES),
        }
    }

    fn compiled(&self) -> &Compiled {
        &self.compiled
    }

    /// Asks the plugin to check `config`; a rejection or a failure is `InvalidConfig`.
    pub async fn validate_config(&self, config: &str) -> Result<(), PolicyError> {
        let compiled = self.compiled();
        let idx: &plugin_if::GuestIndices = &compiled.exports.plugin;
        let config = config.to_string();
        compiled.instantiated();
        let verdict = guarded!(
            &self.engine,
            &compiled.pre,
            &self.limits,
            |store, instance| {
                let guest = idx.load(&mut store, &instance)?;
                guest.call_validate_config(&mut store, &config).await
            }
        )
        .0;
        let message = match verdict {
            Ok(Ok(())) => return Ok(()),
            // It becomes a `PolicyFailed` status message: cut to a message's length.
            Ok(Err(message)) => text::clean(&message, text::MESSAGE_BYTES),
            Err(failure) => format!("validate-config {failure}"),
        };
        Err(PolicyError::InvalidConfig {
            plugin: self.name.clone(),
            message,
        })
    }

    /// One hook call in a fresh instance: the typed export, the guest's own `Err` bounded
    /// like an answer. The caller converts, bounds and validates the answer.
    async fn call_hook<P, A>(
        &self,
        hook: Hook,
        cluster: &kvpilot_sdk::Cluster,
        index: Option<ComponentExportIndex>,
        params: P,
    ) -> Result<A, PolicyError>
    where
        P: ComponentNamedList + Lower + Send + Sync,
        A: ComponentType + Lift + Send + Sync + 'static,
    {
        let index = index.ok_or_else(|| self.missing(hook))?;
        let compiled = self.compiled();
        compiled.instantiated();
        let (outcome, stderr) = guarded!(
            &self.engine,
            &compiled.pre,
            &self.limits,
            |store, instance| {
                let func = instance.get_typed_func::<P, Results<A>>(&mut store, index)?;
                func.call_async(&mut store, params)
                    .await
                    .map(|(answer,)| answer)
            }
        );
        // Published whatever the outcome: the lines before a panic explain it.
        logs::publish(
            &self.log,
            &compiled.log_limit,
            stderr.as_deref(),
            &self.name,
            hook,
            &format!("{}/{}", cluster.namespace, cluster.name),
        );
        outcome
            .map_err(|f| f.into_error(&self.name, hook))?
            .map_err(|message| self.plugin_error(hook, message))
    }

    /// The answer memoized for this exact request, if any (see `memo.rs`).
    fn recall(&self, asked: Asked<'_>) -> Option<Answer> {
        let memo = self.memo.as_ref()?;
        memo.get(&self.compiled.sha256, &self.limits, asked)
    }

    /// Memoizes a validated answer (never a failure: those are not passed here).
    fn remember(&self, asked: Asked<'_>, answer: Answer) {
        if let Some(memo) = &self.memo {
            memo.put(&self.compiled.sha256, &self.limits, asked, answer);
        }
    }

    /// replica-selection: calls, bounds and validates the answer (`request.config` as given).
    /// An identical request answered before by the same component under the same limits is
    /// answered from the memo, without an instance (see [`Plugin::unmemoized`]).
    pub async fn select(&self, request: &SelectionRequest) -> Result<Selection, PolicyError> {
        if let Some(Answer::Selection(answer)) = self.recall(Asked::Select(request)) {
            return Ok(answer);
        }
        let answer = self.select_afresh(request).await?;
        self.remember(Asked::Select(request), Answer::Selection(answer.clone()));
        Ok(answer)
    }

    async fn select_afresh(&self, request: &SelectionRequest) -> Result<Selection, PolicyError> {
        let hook = Hook::ReplicaSelection;
        let input = convert::selection_ref(request);
        let index = self.compiled().exports.replica_selection;
        let answer = self
            .call_hook::<SelectParams<'_>, SelectAnswer>(hook, &request.cluster, index, (&input,))
            .await?;
        let answer = convert::selection(answer);
        self.too_large(hook, convert::selection_bytes(&answer))?;
        validate::selection(request, &answer).map_err(|i| self.invalid(hook, i))?;
        Ok(match answer {
            // A wait reason goes to status and events: cleaned and cut (rule 10).
            Selection::Wait(reason) => Selection::Wait(text::clean(&reason, text::MESSAGE_BYTES)),
            promote => promote,
        })
    }

    /// snapshot-schedule: calls, bounds and validates the answer (memoized like `select`).
    pub async fn schedule(
        &self,
        request: &ScheduleRequest,
    ) -> Result<Vec<MemberSchedule>, PolicyError> {
        if let Some(Answer::Schedules(answer)) = self.recall(Asked::Schedule(request)) {
            return Ok(answer);
        }
        let answer = self.schedule_afresh(request).await?;
        self.remember(Asked::Schedule(request), Answer::Schedules(answer.clone()));
        Ok(answer)
    }

    async fn schedule_afresh(
        &self,
        request: &ScheduleRequest,
    ) -> Result<Vec<MemberSchedule>, PolicyError> {
        let hook = Hook::SnapshotSchedule;
        let input = convert::schedule_ref(request);
        let index = self.compiled().exports.snapshot_schedule;
        let answer = self
            .call_hook::<ScheduleParams<'_>, ScheduleAnswer>(
                hook,
                &request.cluster,
                index,
                (&input,),
            )
            .await?;
        let answer = convert::schedules(answer);
        self.too_large(hook, convert::schedules_bytes(&answer))?;
        validate::schedules(request, &answer).map_err(|i| self.invalid(hook, i))?;
        // Each schedule in its canonical text: the same schedule, without whatever spacing
        // the plugin put in it (it is shown in status).
        Ok(answer
            .into_iter()
            .map(|mut entry| {
                if let Some(cron) = entry.cron.as_ref().and_then(|c| c.parse::<Cron>().ok()) {
                    entry.cron = Some(cron.to_string());
                }
                entry
            })
            .collect())
    }

    /// rollout-order: calls, bounds and validates the answer (memoized like `select`).
    pub async fn next(&self, request: &RolloutRequest) -> Result<Step, PolicyError> {
        if let Some(Answer::Step(answer)) = self.recall(Asked::Next(request)) {
            return Ok(answer);
        }
        let answer = self.next_afresh(request).await?;
        self.remember(Asked::Next(request), Answer::Step(answer.clone()));
        Ok(answer)
    }

    async fn next_afresh(&self, request: &RolloutRequest) -> Result<Step, PolicyError> {
        let hook = Hook::RolloutOrder;
        let input = convert::rollout_ref(request);
        let index = self.compiled().exports.rollout_order;
        let answer = self
            .call_hook::<NextParams<'_>, NextAnswer>(hook, &request.cluster, index, (&input,))
            .await?;
        let answer = convert::step(answer);
        self.too_large(hook, convert::step_bytes(&answer))?;
        validate::step(request, &answer).map_err(|i| self.invalid(hook, i))?;
        Ok(match answer {
            Step::Wait(reason) => Step::Wait(text::clean(&reason, text::MESSAGE_BYTES)),
            step => step,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::guest_message;

    #[test]
    fn guest_message_keeps_the_panic_and_drops_the_hint() {
        let stderr = "thread '<unnamed>' panicked at src/lib.rs:3:5:\nboom\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert_eq!(
            guest_message(stderr),
            "thread '<unnamed>' panicked at src/lib.rs:3:5: boom"
        );
        assert!(guest_message(&"é".repeat(3000)).starts_with('…'));
    }

    #[test]
    fn guest_message_finds_the_panic_after_a_flood() {
        let flood = "log line\n".repeat(5000);
        let stderr =
            format!("{flood}thread '<unnamed>' panicked at src/lib.rs:9:1:\nout of ideas\n");
        assert_eq!(
            guest_message(&stderr),
            "thread '<unnamed>' panicked at src/lib.rs:9:1: out of ideas"
        );
        // No panic: the end is kept.
        let end = guest_message(&format!("{flood}last words"));
        assert!(
            end.starts_with('…') && end.ends_with("log line last words"),
            "{end}"
        );
        // A very long panic message keeps its start.
        let long = format!("thread 'x' panicked at a.rs:1:1:\n{}", "y".repeat(5000));
        assert!(guest_message(&long).starts_with("thread 'x' panicked at a.rs:1:1: yyy"));
    }
}
