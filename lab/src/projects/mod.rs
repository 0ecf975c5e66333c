//! The projects as the lab knows them: one module per project, with everything the lab needs
//! to run, load, check and show it (its entry in the engine's project table, its workload
//! driver, its console figures and views), and [`REGISTRY`], the one list of them. Adding
//! project N adds a module here, one [`Plugin`] line to the registry, and its service crate.

pub mod proj0;
pub mod proj1;
pub mod proj2;
pub mod proj3;
pub mod proj4;
pub mod proj5;
pub mod proj6;
pub mod raft_view;
pub mod ring_view;

use crate::console::views::ProjectUi;
use crate::engine::project::Project;

/// A project as the lab runs it: what the engine needs to start, load and check its clusters
/// (`project`), and what the console shows of them (`console`: the node table's figures and
/// the views Tab cycles through). The engine reads only `project`.
pub struct Plugin {
    pub project: Project,
    pub console: fn() -> ProjectUi,
}

/// Every project the lab can run, in the learning path's order.
pub const REGISTRY: &[Plugin] = &[
    Plugin {
        project: proj0::PROJECT,
        console: proj0::console,
    },
    Plugin {
        project: proj1::PROJECT,
        console: proj1::console,
    },
    Plugin {
        project: proj2::PROJECT,
        console: proj2::console,
    },
    Plugin {
        project: proj3::PROJECT,
        console: proj3::console,
    },
    Plugin {
        project: proj4::PROJECT,
        console: proj4::console,
    },
    Plugin {
        project: proj5::PROJECT,
        console: proj5::console,
    },
    Plugin {
        project: proj6::PROJECT,
        console: proj6::console,
    },
];
