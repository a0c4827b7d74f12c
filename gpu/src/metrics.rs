//! The executor's metrics, recorded through the `metrics` facade (the binary installs the
//! Prometheus recorder). Labels come from closed sets only: the operation, the priority class,
//! the backend, an error's [`tag`](crate::GpuError::tag), a memory kind; never a tenant name.
//!
//! ```
//! cumulus_gpu::metrics::describe(); // once, at startup
//! ```

/// Histogram: seconds a work item waited in the executor's queues (`op`, `priority`).
pub const QUEUE_SECONDS: &str = "cumulus_gpu_tenant_queue_seconds";
/// Histogram: seconds from dispatch to completion on the device (`op`, `backend`).
pub const KERNEL_SECONDS: &str = "cumulus_gpu_kernel_seconds";
/// Counter: work items by outcome (`op`, `outcome` = `ok` or an error tag).
pub const REQUESTS_TOTAL: &str = "cumulus_gpu_requests_total";
/// Gauge: device memory (`kind` = `used`, `limit`, `shared_weights`).
pub const MEMORY_BYTES: &str = "cumulus_gpu_memory_bytes";
/// Gauge: connected tenants.
pub const TENANTS: &str = "cumulus_gpu_tenants";
/// Gauge: work items queued, not yet dispatched.
pub const QUEUED: &str = "cumulus_gpu_queued";
/// Gauge: work items on the device.
pub const IN_FLIGHT: &str = "cumulus_gpu_in_flight";

/// Describes every metric of the executor (units and help text).
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_histogram!(
        QUEUE_SECONDS,
        Unit::Seconds,
        "Time a GPU work item waited in the executor's queues before dispatch"
    );
    describe_histogram!(
        KERNEL_SECONDS,
        Unit::Seconds,
        "Time from dispatch of a GPU work item to its completion on the device"
    );
    describe_counter!(
        REQUESTS_TOTAL,
        Unit::Count,
        "GPU work items by operation and outcome"
    );
    describe_gauge!(
        MEMORY_BYTES,
        Unit::Bytes,
        "Device memory of the GPU executor: used, limit, and resident shared weights"
    );
    describe_gauge!(
        TENANTS,
        Unit::Count,
        "Tenants connected to the GPU executor"
    );
    describe_gauge!(QUEUED, Unit::Count, "GPU work items queued in the executor");
    describe_gauge!(IN_FLIGHT, Unit::Count, "GPU work items on the device");
}
