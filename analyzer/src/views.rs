//! The API's views (`proto::api`) of what the engine holds: node listings, one component with its
//! symptoms and incidents, jobs with their ranks, the switch topology, the fleet summary and the
//! health rows. Built here, at the edge, from the engine's read-only accessors; the engine itself
//! only diagnoses.

use std::collections::{BTreeMap, BTreeSet};

use faultline_proto::api::{
    AffectedJob, ComponentView, HealthRow, JobView, NodeSummary, RankView, Summary, SwitchView, SymptomView,
    TopologyView,
};
use faultline_proto::topology::SwitchTier;
use faultline_proto::{ComponentId, ComponentKind};

use crate::detect::SymptomKind;
use crate::detect::job as jobdet;
use crate::engine::Analyzer;

/// The views, as methods on the engine (an inherent impl kept in this file) for the handlers that
/// hold it.
impl Analyzer {
    /// Every node heard from, by name.
    pub fn nodes(&self) -> Vec<NodeSummary> {
        self.state()
            .nodes
            .values()
            .map(|n| {
                let faulty = n
                    .gpus
                    .keys()
                    .filter(|g| {
                        let id = ComponentId::gpu(&n.name, **g);
                        self.node_symptoms(&n.name).is_some_and(|v| {
                            v.iter().any(|s| {
                                !s.kind.is_supporting()
                                    && (s.component == id
                                        || matches!(&s.component, ComponentId::NvLink { gpu, .. } if gpu == *g))
                            })
                        })
                    })
                    .count() as u32;
                NodeSummary {
                    node: n.name.clone(),
                    last_seen_s: n.last_report_ms as f64 / 1000.0,
                    last_seq: n.last_seq,
                    reports: n.reports,
                    gpus: n.gpus.len() as u32,
                    gpus_faulty: faulty,
                    nics: n.nics.len() as u32,
                    healthy: self.node_healthy(&n.name),
                    shutdown: n.shutdown,
                }
            })
            .collect()
    }

    /// One component with its symptoms and graph neighbours; `None` when unknown.
    pub fn component(&self, id: &ComponentId) -> Option<ComponentView> {
        let known = self.topo().contains(id)
            || match id {
                ComponentId::NvLink { host, gpu, link } => self
                    .state()
                    .nodes
                    .get(host)
                    .and_then(|n| n.gpus.get(gpu))
                    .is_some_and(|g| g.nvlinks.contains_key(link)),
                _ => false,
            };
        if !known {
            return None;
        }
        let mut symptoms: Vec<SymptomView> = self
            .symptoms_of(id)
            .into_iter()
            .map(|s| {
                let mut v = SymptomView {
                    kind: s.kind.as_str().to_string(),
                    severity: s.severity,
                    onset_s: s.onset_ms as f64 / 1000.0,
                    detail: s.detail.clone(),
                    held_until_s: None,
                    held_because: None,
                };
                crate::incident::fatal_xid_hold(
                    &mut v,
                    s.kind,
                    self.cfg().fatal_xid_hold_s,
                    self.cfg().resolve_after_s,
                );
                v
            })
            .collect();
        // Counters stuck at their maximum: a note on the NIC (their rates are unknown), kept out of
        // the detectors' symptoms because healthy ports sit there for months.
        if let ComponentId::Nic { host, name } = id {
            if let Some(n) = self.state().nodes.get(host).and_then(|n| n.nics.get(name).map(|x| (n, x))) {
                if !n.1.saturated.is_empty() {
                    symptoms.push(SymptomView {
                        kind: SymptomKind::CounterSaturated.as_str().to_string(),
                        severity: faultline_proto::Severity::Info,
                        onset_s: n.0.last_report_ms as f64 / 1000.0,
                        detail: format!("{id} counters at their maximum, rates unknown: {}", n.1.saturated.join(", ")),
                        held_until_s: None,
                        held_because: None,
                    });
                }
            }
        }
        let ids = id.to_string();
        let incidents = self
            .book()
            .incidents
            .iter()
            .filter(|i| &i.root == id || i.paths.iter().any(|p| p.contains(&ids)))
            .map(|i| i.id.clone())
            .collect();
        let mut depends_on = self.topo().depends_on(id);
        if depends_on.is_empty() {
            if let ComponentId::NvLink { host, gpu, .. } = id {
                depends_on.push(ComponentId::gpu(host, *gpu));
            }
        }
        Some(ComponentView {
            id: id.clone(),
            kind: id.kind(),
            healthy: symptoms.iter().all(|s| s.severity == faultline_proto::Severity::Info),
            symptoms,
            depends_on,
            dependents: self.topo().dependents(id),
            incidents,
        })
    }

    /// Every running job.
    pub fn jobs(&self) -> Vec<JobView> {
        self.state().jobs.keys().filter_map(|id| job_view(self, id)).collect()
    }

    /// One job by id (without the `job:` prefix); `None` when unknown.
    pub fn job(&self, id: &str) -> Option<JobView> {
        job_view(self, id)
    }

    /// Switches, the NICs cabled to them, and nodes.
    pub fn topology_view(&self) -> TopologyView {
        let open_roots: BTreeSet<ComponentId> = self.book().open_roots().into_iter().map(|x| x.0).collect();
        let switches = self
            .topo()
            .switch_tiers()
            .iter()
            .map(|(name, tier)| {
                let id = ComponentId::switch(name);
                SwitchView {
                    id: id.to_string(),
                    tier: match tier {
                        SwitchTier::Leaf => "leaf".into(),
                        SwitchTier::Spine => "spine".into(),
                    },
                    uplinks: self.topo().uplinks(name).iter().map(|u| ComponentId::switch(u).to_string()).collect(),
                    nics: self
                        .topo()
                        .nics_of_leaf(name)
                        .map(|s| s.iter().map(|n| n.to_string()).collect())
                        .unwrap_or_default(),
                    healthy: !open_roots.contains(&id),
                }
            })
            .collect();
        TopologyView { switches, nodes: self.state().nodes.keys().cloned().collect() }
    }

    /// The cluster at a glance.
    pub fn summary(&self) -> Summary {
        let nodes = self.nodes();
        let mut by_class = BTreeMap::new();
        let mut by_sev = BTreeMap::new();
        for i in self.book().open_incidents() {
            *by_class.entry(i.class).or_default() += 1;
            *by_sev.entry(i.severity).or_default() += 1;
        }
        let mut most: Vec<AffectedJob> = self
            .book()
            .open_by_job()
            .into_iter()
            .map(|(job, n)| AffectedJob {
                ranks: self.state().jobs.get(&job).map(|j| j.ranks.len() as u32).unwrap_or(0),
                job,
                open_incidents: n,
            })
            .collect();
        most.sort_by(|a, b| b.open_incidents.cmp(&a.open_incidents).then(a.job.cmp(&b.job)));
        most.truncate(10);
        Summary {
            nodes: nodes.len() as u32,
            nodes_healthy: nodes.iter().filter(|n| n.healthy).count() as u32,
            gpus: nodes.iter().map(|n| n.gpus).sum(),
            gpus_faulty: nodes.iter().map(|n| n.gpus_faulty).sum(),
            jobs: self.state().jobs.len() as u32,
            open_incidents: self.book().open_count() as u32,
            open_by_class: by_class,
            open_by_severity: by_sev,
            most_affected_jobs: most,
        }
    }

    /// Health of every hardware component and agent (for `faultline_component_healthy`).
    pub fn health(&self) -> impl Iterator<Item = HealthRow> + '_ {
        self.state().nodes.values().flat_map(move |n| {
            let syms = self.node_symptoms(&n.name);
            let sick = move |id: &ComponentId| {
                syms.is_some_and(|v| v.iter().any(|s| &s.component == id && !s.kind.is_supporting()))
            };
            let node_id = ComponentId::node(&n.name);
            let silent = syms.is_some_and(|v| v.iter().any(|s| s.kind == SymptomKind::HeartbeatLost));
            let mut rows = vec![
                HealthRow {
                    kind: ComponentKind::Node,
                    node: Some(n.name.clone()),
                    healthy: !sick(&node_id),
                    id: node_id,
                },
                HealthRow {
                    id: ComponentId::agent(&n.name),
                    kind: ComponentKind::Agent,
                    node: Some(n.name.clone()),
                    healthy: !silent,
                },
            ];
            for g in n.gpus.keys() {
                let id = ComponentId::gpu(&n.name, *g);
                rows.push(HealthRow { healthy: !sick(&id), kind: ComponentKind::Gpu, node: Some(n.name.clone()), id });
            }
            for name in n.nics.keys() {
                let id = ComponentId::nic(&n.name, name);
                rows.push(HealthRow { healthy: !sick(&id), kind: ComponentKind::Nic, node: Some(n.name.clone()), id });
            }
            rows.into_iter()
        })
    }
}

fn job_view(a: &Analyzer, id: &str) -> Option<JobView> {
    let job = a.state().jobs.get(id)?;
    let multi = a.topo().job_multi_node(id);
    let jid = ComponentId::job(id);
    let mut ranks = Vec::new();
    let mut paths = Vec::new();
    for (k, r) in &job.ranks {
        let nic = r.nic.as_ref().filter(|_| multi).map(|n| ComponentId::nic(&r.node, n));
        let leaf = nic.as_ref().and_then(|n| a.topo().leaf_of_nic(n)).map(|l| ComponentId::switch(l).to_string());
        let rid = ComponentId::rank(id, *k);
        let healthy = a.symptoms_of(&rid).is_empty()
            && r.gpus.iter().all(|g| a.symptoms_of(&ComponentId::gpu(&r.node, *g)).is_empty())
            && a.node_symptoms(&r.node).is_none_or(|v| v.iter().all(|s| s.kind != SymptomKind::HeartbeatLost));
        ranks.push(RankView {
            rank: *k,
            node: r.node.clone(),
            gpus: r.gpus.iter().map(|g| ComponentId::gpu(&r.node, *g).to_string()).collect(),
            nic: nic.map(|n| n.to_string()),
            leaf,
            healthy,
            step: r.step,
            state: format!("{:?}", r.state).to_lowercase(),
        });
        paths.extend(a.topo().rank_path(id, *k));
    }
    let incidents: Vec<String> = a
        .book()
        .incidents
        .iter()
        .filter(|i| i.affected_jobs.iter().any(|j| j == id) || i.root == jid)
        .map(|i| i.id.clone())
        .collect();
    let open = a.book().open_incidents().any(|i| i.affected_jobs.iter().any(|j| j == id) || i.root == jid);
    Some(JobView {
        id: id.to_string(),
        healthy: !open && a.job_symptoms(id).is_none_or(|v| v.is_empty()) && ranks.iter().all(|r| r.healthy),
        ranks,
        paths,
        incidents,
        step_time_ms: jobdet::current_step_ms(job),
    })
}
