//! Projects as plug-ins: what the engine needs to know to run each project's cluster.
//!
//! Each project is defined in its own module of `crate::projects` (roles, node flags, workload
//! driver, checks) and listed once, in `crate::projects::REGISTRY` ([`all`]); nothing else in
//! the engine changes.

use super::scenario::CheckSpec;
use super::workload::{BoxFuture, Driver, Target};

/// How many nodes of a role a cluster has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// Exactly this many, whatever `--nodes` says (one namenode, one controller...).
    Fixed(usize),
    /// The rest of `--nodes`.
    Rest,
}

/// A kind of node in a project's cluster.
#[derive(Debug, Clone, Copy)]
pub struct Role {
    pub name: &'static str,
    pub count: Count,
    /// Node ids are this prefix and a number: `n1`, `broker2`...
    pub id_prefix: &'static str,
    /// The service its nodes run, when it is not the project's (Project 5's Kafka-lite nodes
    /// run `log`). Such nodes get only their role's flags: the project's node flags, the
    /// user's and the initial-members flag are the project's service's.
    pub service: Option<&'static str>,
    /// Service flags for nodes of this role (`--role broker`), before the project's.
    pub flags: &'static [&'static str],
}

impl Project {
    /// The role called `name`.
    pub fn role(&self, name: &str) -> Option<&'static Role> {
        self.roles.iter().find(|r| r.name == name)
    }
}

impl Role {
    /// Whether its nodes run a service other than the project's.
    pub fn foreign(&self) -> bool {
        self.service.is_some()
    }
}

/// How a project's nodes talk to each other (each link gets a proxy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerLinks {
    /// Nodes never call each other (Project 0).
    None,
    /// gRPC between every pair.
    Tcp,
    /// gRPC between every pair, and UDP datagrams (gossip) to the same port numbers: a node
    /// that speaks UDP listens on its gRPC port number, and each link's UDP proxy sits on its
    /// TCP proxy's port number, so one `--peer` address serves both.
    TcpAndUdp,
}

#[derive(Clone, Copy)]
pub struct Project {
    /// `proj0`...
    pub name: &'static str,
    pub title: &'static str,
    /// What `lab node <service>` runs.
    pub service: &'static str,
    pub roles: &'static [Role],
    pub default_nodes: usize,
    pub peer_links: PeerLinks,
    /// Service flags added to every node's command line.
    pub node_flags: &'static [&'static str],
    /// The flag that tells every node which nodes form the first cluster (the rest, the
    /// spares added later, join it), for projects whose nodes must agree on that (Raft).
    pub initial_members_flag: Option<&'static str>,
    /// How its clusters are loaded (see [`super::workload`]).
    pub workload: &'static dyn Driver,
    /// The checks its scenarios may ask for.
    pub checks: &'static [CheckSpec],
    /// Runs one node: `lab node <service> ARGS...` calls it with the usage name and ARGS.
    pub node_main: fn(&str, Vec<std::ffi::OsString>) -> std::process::ExitCode,
    /// Tells the cluster that node `id` leaves it (Raft: a membership change through the
    /// leader, which returns once it is committed), given every node's client address. `None`
    /// for projects without membership: `remove-node` is refused for them.
    pub remove_member: Option<RemoveMember>,
    /// Checks service flags a user adds to every node (`--read-mode lease`) before anything
    /// starts: `Err` says what is wrong, as the node itself would.
    pub check_node_flags: fn(&[String]) -> Result<(), String>,
    /// How `--autoscale` scales it (`None`: it cannot be, its nodes are members of something
    /// that must agree on who they are).
    pub scaling: Option<super::autoscale::Scaling>,
}

/// See [`Project::remove_member`].
pub type RemoveMember = for<'a> fn(&'a [Target], &'a str) -> BoxFuture<'a, anyhow::Result<()>>;

/// The cluster to start: a project, its size, the seed for every random choice, and service
/// flags added to every node's command line after the project's own (a scenario's
/// `node_flags:`, then `--node-flags`; where both set a flag, the later wins).
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub project: &'static Project,
    pub nodes: usize,
    pub seed: u64,
    pub node_flags: Vec<String>,
    /// `--autoscale MIN..MAX`: `nodes` then counts MIN of the scaled role, and the cluster is
    /// planned for MAX.
    pub autoscale: Option<super::autoscale::Range>,
}

impl ClusterSpec {
    pub fn new(project: &'static Project, nodes: usize, seed: u64) -> Self {
        Self {
            project,
            nodes,
            seed,
            node_flags: Vec::new(),
            autoscale: None,
        }
    }

    /// A cluster of `project` autoscaled within `range`: its fixed roles and MIN of the
    /// scaled one to start with.
    pub fn autoscaled(
        project: &'static Project,
        range: super::autoscale::Range,
        seed: u64,
    ) -> Result<Self, String> {
        let Some(scaling) = project.scaling else {
            return Err(format!(
                "{} cannot be autoscaled: its nodes are members that must agree on who they are",
                project.name
            ));
        };
        let fixed = project.nodes_besides(scaling.role);
        Ok(Self {
            autoscale: Some(range),
            ..Self::new(project, fixed + range.min, seed)
        })
    }

    /// How many nodes beyond `nodes` the cluster may grow by.
    pub fn spares(&self) -> usize {
        match self.autoscale {
            Some(range) => range.max - range.min,
            None => (1..=super::supervisor::SPARE_NODES)
                .rev()
                .find(|extra| self.project.plan(self.nodes + extra).is_ok())
                .unwrap_or(0),
        }
    }

    /// The size and the node flags are ones the project accepts.
    pub fn check(&self) -> Result<(), String> {
        self.project.plan(self.nodes)?;
        if self.autoscale.is_some() {
            self.project
                .plan(self.nodes + self.spares())
                .map_err(|e| format!("autoscale: {e}"))?;
        }
        (self.project.check_node_flags)(&self.node_flags)
            .map_err(|e| format!("node flags {:?}: {e}", self.node_flags.join(" ")))
    }
}

/// `"--read-mode lease --fsync never"` -> the flags, split at whitespace (what `--node-flags`
/// takes on the command line).
pub fn split_flags(text: &str) -> Vec<String> {
    text.split_whitespace().map(String::from).collect()
}

/// Every project the lab can run, from the one registry ([`crate::projects::REGISTRY`]).
pub fn all() -> impl Iterator<Item = &'static Project> {
    crate::projects::REGISTRY
        .iter()
        .map(|plugin| &plugin.project)
}

impl std::fmt::Debug for Project {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Project").field("name", &self.name).finish()
    }
}

/// The project called `name`; the error lists the known ones.
pub fn find(name: &str) -> Result<&'static Project, String> {
    all().find(|p| p.name == name).ok_or_else(|| {
        let known: Vec<_> = all().map(|p| p.name).collect();
        format!(
            "unknown project {name:?}; known projects: {}",
            known.join(", ")
        )
    })
}

/// The project whose service is called `name` (or the project called `name`).
pub fn find_service(name: &str) -> Result<&'static Project, String> {
    all()
        .find(|p| p.service == name || p.name == name)
        .ok_or_else(|| {
            let known: Vec<_> = all()
                .map(|p| format!("{} ({})", p.service, p.name))
                .collect();
            format!(
                "unknown service {name:?}; known services: {}",
                known.join(", ")
            )
        })
}

/// A planned node: its id and role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedNode {
    pub id: String,
    pub role: &'static str,
}

/// The most nodes one cluster may have.
pub const MAX_NODES: usize = 16;

impl Project {
    /// How many nodes the roles other than `role` have (all fixed-size).
    pub fn nodes_besides(&self, role: &str) -> usize {
        self.roles
            .iter()
            .filter(|r| r.name != role)
            .map(|r| match r.count {
                Count::Fixed(n) => n,
                Count::Rest => 0,
            })
            .sum()
    }

    /// How many nodes `lab run` starts without `--nodes`: the project's default, and at least
    /// 3, so the console has something to break (`lab up` and scenarios take the default).
    pub fn console_nodes(&self) -> usize {
        self.default_nodes.max(3)
    }

    /// The nodes of a cluster of `nodes` nodes: the fixed roles first (in the order the
    /// project lists them), then the `Rest` role's. So a plan for more nodes starts with the
    /// plan for fewer (the supervisor's spare nodes come last).
    pub fn plan(&self, nodes: usize) -> Result<Vec<PlannedNode>, String> {
        let fixed: usize = self
            .roles
            .iter()
            .map(|r| match r.count {
                Count::Fixed(n) => n,
                Count::Rest => 0,
            })
            .sum();
        // At least one node of every role.
        let rest = usize::from(self.roles.iter().any(|r| matches!(r.count, Count::Rest)));
        let least = (fixed + rest).max(1);
        if nodes < least {
            return Err(format!(
                "{} needs at least {least} node(s), got {nodes}",
                self.name,
            ));
        }
        if nodes > MAX_NODES {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            return Err(format!(
                "{nodes} nodes is more than the lab runs: at most {MAX_NODES}. Every node is a \
                 process of its own, and this machine's {cores} core(s) would be shared so thinly \
                 that timeouts would measure the scheduler, not the system"
            ));
        }
        let mut planned = Vec::new();
        let fixed_first = self
            .roles
            .iter()
            .filter(|r| matches!(r.count, Count::Fixed(_)))
            .chain(self.roles.iter().filter(|r| matches!(r.count, Count::Rest)));
        for role in fixed_first {
            let count = match role.count {
                Count::Fixed(n) => n,
                Count::Rest => nodes - fixed,
            };
            for i in 1..=count {
                planned.push(PlannedNode {
                    id: format!("{}{i}", role.id_prefix),
                    role: role.name,
                });
            }
        }
        Ok(planned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_name_nodes_by_role() {
        let proj0 = find("proj0").unwrap();
        let plan = proj0.plan(3).unwrap();
        assert_eq!(
            plan.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
            ["n1", "n2", "n3"]
        );
        assert!(proj0.plan(0).unwrap_err().contains("at least 1"));
        // Fixed roles first, then the rest: a bigger plan extends a smaller one.
        let proj3 = find("proj3").unwrap();
        let ids = |n| -> Vec<String> { proj3.plan(n).unwrap().into_iter().map(|p| p.id).collect() };
        assert_eq!(ids(8), ["c1", "c2", "c3", "g1", "g2", "b1", "b2", "b3"]);
        assert_eq!(ids(10)[..8], ids(8)[..]);
        assert!(proj3.plan(5).unwrap_err().contains("at least 6"));
        // Project 5 runs Kafka-lite's nodes (the `log` service) beside its own.
        let proj5 = find("proj5").unwrap();
        let plan: Vec<String> = proj5.plan(8).unwrap().into_iter().map(|p| p.id).collect();
        assert_eq!(plan, ["tc1", "ledger1", "n1", "c1", "b1", "b2", "s1", "s2"]);
        assert_eq!(proj5.role("broker").unwrap().service, Some("log"));
        assert_eq!(proj5.role("shard").unwrap().service, None);
        assert!(
            find("proj99")
                .unwrap_err()
                .contains("known projects: proj0")
        );
    }
}
