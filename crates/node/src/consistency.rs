//! How fresh a read must be.

/// How fresh a read must be. [`crate::Node::barrier`] waits for a level and returns
/// the index it reached; [`crate::Node::query`] reads at a level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// This node's own SQLite file as it is; with `min_index`, once this node has
    /// applied at least that index (read-your-writes from any node).
    Local {
        /// Wait until this index is applied here.
        min_index: Option<u64>,
    },
    /// Sees every write acknowledged before the read began: raft ReadIndex, then the
    /// read runs on this node (followers included) once it has applied that index.
    #[default]
    Linearizable,
    /// The read is ordered through the raft log (an empty write), then runs on this
    /// node.
    Strong,
}

impl Consistency {
    /// This node's file as it is, without waiting.
    pub const LOCAL: Consistency = Consistency::Local { min_index: None };
}
