//! Project 6, CRDT collaborative documents (`services/collab`): so far its trace benchmark;
//! the servers, editors and the convergence view plug in here as they land.

pub mod bench;
