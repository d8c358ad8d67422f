//! GPU metrics under dcgm-exporter's names and labels, plus `faultline_gpu_*` for what DCGM lacks.
//! (Owned by the GPU work, issue 3: stub until then.)
