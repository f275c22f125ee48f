//! The GPU series of [`Metrics`]: health per device and for the node, temperature, memory,
//! XID events.

use super::{GpuLabels, Metrics, XidLabels};

impl Metrics {
    /// Records a GPU report: health per device and for the node, temperature, memory, XIDs.
    pub fn gpu(&self, report: &crate::gpu::GpuReport) {
        let all = GpuLabels { gpu: "all".into() };
        self.gpu_healthy
            .get_or_create(&all)
            .set(i64::from(report.healthy));
        for d in &report.devices {
            let labels = GpuLabels {
                gpu: d.info.index.to_string(),
            };
            self.gpu_healthy
                .get_or_create(&labels)
                .set(i64::from(d.healthy));
            if let Some(t) = d.info.temperature_celsius {
                self.gpu_temperature
                    .get_or_create(&labels)
                    .set(i64::from(t));
            }
            let used = i64::try_from(d.info.memory_used_bytes).unwrap_or(i64::MAX);
            self.gpu_memory_used.get_or_create(&labels).set(used);
            for (xid, count) in &d.xids {
                let labels = XidLabels {
                    gpu: labels.gpu.clone(),
                    xid: xid.to_string(),
                };
                // The report holds totals since the start: add what the counter lacks.
                let counter = self.gpu_xids.get_or_create(&labels);
                let seen = counter.get();
                if *count > seen {
                    counter.inc_by(count - seen);
                }
            }
        }
    }
}
