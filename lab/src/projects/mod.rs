//! The projects as the lab knows them: one module per project, with everything the lab needs
//! to run, load, check and show it (its entry in the engine's project table, its workload
//! driver, its console figures and views). Adding project N adds a module here, names it in
//! [`crate::engine::project::PROJECTS`] and in `crate::console::views::for_project`, and links
//! its service crate.

pub mod proj0;
pub mod proj1;
pub mod proj2;
pub mod proj3;
pub mod raft_view;
pub mod ring_view;
