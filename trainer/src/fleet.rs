//! A job's workers on a function platform: the one place where a job's `[workers]` (memory
//! tier, count, timeout) become the platform settings of its worker function, wherever the job
//! runs (`cumulus train`, `cumulus up` + `submit`, the trial runs of `--plan`).
//!
//! Each job gets a worker function of its own ([`worker_function_name`]), deployed with
//! [`worker_function`]'s settings: one instance per worker, the job's tier and invocation
//! timeout. Its instances' memory is reserved on the platform for as long as the job runs, so a
//! barrier over N workers always has its N instances and two jobs never compete for the same
//! ones. A job the platform could never run as written is refused when it is submitted
//! ([`WorkerFleet::check`], naming the limit); one that only does not fit beside the jobs
//! running now waits ([`ReserveError::NotNow`]).
//!
//! ```
//! use cumulus_runtime::CumulusConfig;
//! use cumulus_trainer::fleet::worker_function;
//! # let job = cumulus_trainer::job::JobSpec::from_toml_str("j.toml", r#"
//! # name = "j"
//! # [model]
//! # arch = "mlp"
//! # input_dim = 64
//! # hidden = [8]
//! # n_outputs = 10
//! # [data]
//! # source = "builtin:digits"
//! # [training]
//! # loss = "cross_entropy"
//! # batch_size = 8
//! # optimizer = { kind = "sgd", lr = 0.1 }
//! # [workers]
//! # count = 8
//! # memory_mb = 1024
//! # [stop]
//! # max_epochs = 1
//! # "#).unwrap();
//! let config = CumulusConfig::default();
//! let spec = worker_function(&job, &config.functions).unwrap();
//! assert_eq!((spec.max_instances, spec.memory_mb), (8, 1024));
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use cumulus_runtime::{FunctionSpec, FunctionsConfig, Platform, RuntimeError};

use crate::invoker::{InProcessInvoker, Invoker, PlatformInvoker};
use crate::job::JobSpec;
use crate::worker;

/// A job the platform cannot run as written; the message names the limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unrunnable(pub String);

/// Why a job's workers could not be reserved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReserveError {
    /// They do not fit beside the jobs running now; try again when one ends.
    #[error("{0}")]
    NotNow(String),
    /// They can never run here.
    #[error(transparent)]
    Never(#[from] Unrunnable),
    /// The platform is shutting down.
    #[error("the function platform is shutting down")]
    ShuttingDown,
}

pub type ReleaseFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Where jobs' workers run.
pub trait WorkerFleet: Send + Sync + 'static {
    /// Whether `job` could ever run here.
    fn check(&self, job: &JobSpec) -> Result<(), Unrunnable>;
    /// Reserves `job`'s workers now and returns the invoker of its worker function.
    fn reserve(&self, job_id: &str, job: &JobSpec) -> Result<Arc<dyn Invoker>, ReserveError>;
    /// Gives the workers of `job_id` back (its instances stop); the job has ended.
    fn release<'a>(&'a self, job_id: &'a str) -> ReleaseFuture<'a>;
}

/// The platform's name of a job's worker function: `train-worker-` and the job id made a DNS
/// label (lower case, `[a-z0-9-]`), with a hash of the whole id so that ids differing only in
/// case or punctuation never share a function.
pub fn worker_function_name(job_id: &str) -> String {
    cumulus_runtime::config::function_name(worker::KIND, job_id)
}

/// The platform settings of `job`'s worker function: the operator's `train-worker` settings
/// (kind, url, keep-alive) with the job's tier, one instance and one queue slot per worker, and
/// the job's invocation timeout. Refused, naming the limit, when the platform cannot run it.
pub fn worker_function(
    job: &JobSpec,
    functions: &FunctionsConfig,
) -> Result<FunctionSpec, Unrunnable> {
    let w = &job.workers;
    let tiers = &functions.memory_tiers_mb;
    if !tiers.contains(&w.memory_mb) {
        return Err(Unrunnable(format!(
            "[workers] memory_mb = {}: not one of the platform's memory tiers {tiers:?} (functions.memory_tiers_mb)",
            w.memory_mb
        )));
    }
    let operator = functions.overrides.get(worker::KIND);
    if let Some(cap) = operator.and_then(|o| o.max_instances)
        && w.count as usize > cap
    {
        return Err(Unrunnable(format!(
            "[workers] count = {}: the platform runs at most {cap} {} instances per job (functions.overrides.{}.max_instances)",
            w.count,
            worker::KIND,
            worker::KIND
        )));
    }
    check_worker_memory(job)?;
    let mut spec = functions.spec(worker::KIND);
    spec.memory_mb = w.memory_mb;
    spec.max_instances = w.count as usize;
    spec.min_instances = 0;
    // Each worker's driver has at most one invocation outstanding.
    spec.queue_capacity = w.count as usize;
    spec.timeout_ms = w.timeout_secs.saturating_mul(1000);
    if spec.url.is_none() {
        let needed = u64::from(w.count) * u64::from(w.memory_mb);
        let capacity = functions.capacity();
        if needed > capacity {
            return Err(Unrunnable(format!(
                "[workers] {} workers × {} MB need {needed} MB at once, more than the platform's capacity of {capacity} MB (functions.capacity_mb)",
                w.count, w.memory_mb
            )));
        }
    }
    functions
        .check_spec("[workers]", &spec)
        .map_err(Unrunnable)?;
    Ok(spec)
}

/// Memory of a worker process before its model, MB (the runtime, the store client, the data).
pub const WORKER_BASE_MB: u64 = 150;

/// Refuses a model whose training step cannot fit the workers' tier: weights, gradients, the
/// filter's accumulator and the optimizer's state (four to six copies of the parameters) plus
/// the activations a step keeps for its backward pass — estimated from the config before
/// anything is allocated (a worker with a huge layer used to grow until the kernel killed it).
fn check_worker_memory(job: &JobSpec) -> Result<(), Unrunnable> {
    let config = match &job.model {
        crate::job::ModelSource::Arch(c) => c.clone(),
        // A folder's config is read at the job's start; its weights file bounds it anyway.
        crate::job::ModelSource::Folder(dir) => {
            match cumulus_models::folder::FolderConfig::read(dir) {
                Ok(f) => f.model,
                Err(_) => return Ok(()),
            }
        }
    };
    let size = config
        .size(job.training.batch_size)
        .map_err(|e| Unrunnable(format!("[model]: {e}")))?;
    let slots: u64 = match job.training.optimizer {
        cumulus_models::OptimizerConfig::Sgd { momentum: 0.0, .. } => 0,
        cumulus_models::OptimizerConfig::Sgd { .. }
        | cumulus_models::OptimizerConfig::Adagrad { .. } => 1,
        cumulus_models::OptimizerConfig::Adam { .. }
        | cumulus_models::OptimizerConfig::Adamw { .. } => 2,
    };
    // Weights, gradients, accumulator, the copy each step compares against, optimizer slots.
    let copies = 4 + slots;
    let need = size
        .param_bytes
        .saturating_mul(copies)
        .saturating_add(size.train_activation_bytes)
        .div_ceil(1 << 20)
        .saturating_add(WORKER_BASE_MB);
    let have = u64::from(job.workers.memory_mb);
    if need > have {
        return Err(Unrunnable(format!(
            "[workers] memory_mb = {have}: a worker needs about {need} MB for this model ({} MB of parameters x {copies} copies, {} MB of activations at batch_size {}, {WORKER_BASE_MB} MB of process)",
            size.param_bytes.div_ceil(1 << 20),
            size.train_activation_bytes.div_ceil(1 << 20),
            job.training.batch_size
        )));
    }
    Ok(())
}

/// Workers as functions on the function platform, one deployed function per job.
#[derive(Debug, Clone)]
pub struct PlatformFleet {
    platform: Platform,
}

impl PlatformFleet {
    pub fn new(platform: Platform) -> Self {
        Self { platform }
    }

    /// The platform it deploys on.
    pub fn platform(&self) -> &Platform {
        &self.platform
    }

    /// [`WorkerFleet::reserve`] with the concrete invoker (the trial runs read its records).
    pub fn reserve_platform(
        &self,
        job_id: &str,
        job: &JobSpec,
    ) -> Result<PlatformInvoker, ReserveError> {
        let spec = worker_function(job, &self.platform.config().functions)?;
        let name = worker_function_name(job_id);
        match self.platform.deploy(&name, spec) {
            Ok(()) => Ok(PlatformInvoker::new(self.platform.clone(), name, job_id)),
            Err(e @ RuntimeError::CapacityExceeded { .. }) => {
                Err(ReserveError::NotNow(e.to_string()))
            }
            Err(RuntimeError::ShuttingDown) => Err(ReserveError::ShuttingDown),
            Err(e) => Err(ReserveError::Never(Unrunnable(e.to_string()))),
        }
    }
}

impl WorkerFleet for PlatformFleet {
    fn check(&self, job: &JobSpec) -> Result<(), Unrunnable> {
        worker_function(job, &self.platform.config().functions).map(|_| ())
    }

    fn reserve(&self, job_id: &str, job: &JobSpec) -> Result<Arc<dyn Invoker>, ReserveError> {
        Ok(Arc::new(self.reserve_platform(job_id, job)?))
    }

    fn release<'a>(&'a self, job_id: &'a str) -> ReleaseFuture<'a> {
        Box::pin(async move {
            self.platform.undeploy(&worker_function_name(job_id)).await;
        })
    }
}

/// Workers run in this process ([`InProcessInvoker`]): tests and debugging. Every job fits.
#[derive(Debug, Clone, Copy)]
pub struct InProcessFleet {
    pub time_limit: Duration,
}

impl WorkerFleet for InProcessFleet {
    fn check(&self, _job: &JobSpec) -> Result<(), Unrunnable> {
        Ok(())
    }

    fn reserve(&self, _job_id: &str, _job: &JobSpec) -> Result<Arc<dyn Invoker>, ReserveError> {
        Ok(Arc::new(InProcessInvoker {
            time_limit: self.time_limit,
        }))
    }

    fn release<'a>(&'a self, _job_id: &'a str) -> ReleaseFuture<'a> {
        Box::pin(async {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cumulus_runtime::CumulusConfig;

    fn job(count: u32, memory_mb: u32) -> JobSpec {
        let mut job = JobSpec::from_toml_str("t.toml", crate::job::tests::MINIMAL).expect("valid");
        job.workers.count = count;
        job.workers.memory_mb = memory_mb;
        job
    }

    #[test]
    fn names_are_dns_labels_and_distinct() {
        let a = worker_function_name("Digits_MLP.1");
        let b = worker_function_name("digits-mlp-1");
        assert_ne!(a, b);
        for n in [&a, &b, &worker_function_name(&"x".repeat(64))] {
            assert!(cumulus_runtime::config::valid_function_name(n), "{n}");
        }
    }

    #[test]
    fn the_job_sizes_its_function() {
        let mut j = job(8, 512);
        j.workers.timeout_secs = 30;
        let spec = worker_function(&j, &CumulusConfig::default().functions).unwrap();
        assert_eq!(spec.kind.as_deref(), Some(worker::KIND));
        assert_eq!(spec.max_instances, 8);
        assert_eq!(spec.queue_capacity, 8);
        assert_eq!(spec.memory_mb, 512);
        assert_eq!(spec.timeout_ms, 30_000);
    }

    #[test]
    fn limits_are_named() {
        let mut config = CumulusConfig::default();
        let err = worker_function(&job(2, 1000), &config.functions).unwrap_err();
        assert!(err.0.contains("functions.memory_tiers_mb"), "{err}");

        config.functions.capacity_mb = Some(2048);
        let err = worker_function(&job(4, 1024), &config.functions).unwrap_err();
        assert!(
            err.0.contains("4096 MB") && err.0.contains("functions.capacity_mb"),
            "{err}"
        );
        assert!(worker_function(&job(2, 1024), &config.functions).is_ok());

        // A model too big for its workers' tier, refused before anything is allocated.
        let mut big = job(2, 512);
        if let crate::job::ModelSource::Arch(cumulus_models::ModelConfig::Logreg(c)) =
            &mut big.model
        {
            c.n_features = 10_000_000;
        }
        let err = worker_function(&big, &CumulusConfig::default().functions).unwrap_err();
        assert!(
            err.0.contains("memory_mb = 512") && err.0.contains("MB"),
            "{err}"
        );

        config.functions.overrides.insert(
            worker::KIND.into(),
            cumulus_runtime::FunctionOverride {
                max_instances: Some(1),
                ..Default::default()
            },
        );
        let err = worker_function(&job(2, 512), &config.functions).unwrap_err();
        assert!(err.0.contains("max_instances"), "{err}");
    }
}
