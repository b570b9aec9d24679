//! Probing a process's libraries as it maps them, and telling the user
//! (and the aggregate) what that found: the session's calls into `attach`.

use log::info;

use crate::{
    aggregate::Aggregate,
    attach::{ProbeNote, Probes},
    status::status,
};

/// Probes the libraries `pid` maps that we have not probed yet; tells the
/// user about late loads and problems, and about the rest with -v.
pub fn probe_libraries(probes: &mut Probes, agg: &mut Aggregate, pid: u32, late: bool) {
    let notes = probes.probe_process(pid, late);
    apply_notes(probes.node_mode(), agg, notes);
}

/// Tells the user what probing found, and the aggregate what it needs.
pub fn apply_notes(node_mode: bool, agg: &mut Aggregate, notes: Vec<ProbeNote>) {
    // In node mode processes come and go by the hundred: what is said of
    // each one is for -v.
    for note in notes {
        match note {
            ProbeNote::Probed(m) => info!("{m}"),
            ProbeNote::ProbedLate(m) | ProbeNote::Warning(m) if node_mode => info!("{m}"),
            ProbeNote::ProbedLate(m) => status!("tracer: {m}"),
            ProbeNote::Warning(m) => status!("tracer: warning: {m}"),
            ProbeNote::Python(pid, interp) => {
                info!(
                    "PID {pid} runs Python {}.{}: reading its frames",
                    interp.layout.version.0, interp.layout.version.1
                );
                agg.sites_mut().set_interpreter(pid, interp);
            }
            ProbeNote::Maps(pid, maps) => agg.sites_mut().remember_maps(pid, maps),
            ProbeNote::Go(pid) => agg.mark_go(pid),
            ProbeNote::UnwindTablesFull(pid) => agg.sites_mut().note_tables_full(pid),
        }
    }
}
