//! The contract between an action and the engine: an [`Action`] declares its kind,
//! version, canonical arguments and its inputs as typed handles ([`Input`]) to the
//! actions that produce them; when it runs it reads them by handle through [`Inputs`]
//! and returns an [`Output`] whose `facts` are a typed value of its own (xz block sizes,
//! native-code facts), never a string-keyed table. Facts are stored with the result in a
//! canonical postcard encoding, so they are part of what dependents' keys see.

use std::marker::PhantomData;

use hb_store::{Digest, Tree};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{ActionResult, Ctx, JobError, NodeId, Source};

/// Typed facts an action passes to its dependents along with its tree.
pub trait Facts: Serialize + DeserializeOwned + Send + Sync + 'static {}
impl<T: Serialize + DeserializeOwned + Send + Sync + 'static> Facts for T {}

/// A handle to the result of the action that produces facts `F`, given out by
/// [`crate::Graph::add`]. Holding one is how an action declares an input.
pub struct Input<F> {
    node: NodeId,
    _facts: PhantomData<fn() -> F>,
}

impl<F> Clone for Input<F> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<F> Copy for Input<F> {}
impl<F> std::fmt::Debug for Input<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Input(#{})", self.node)
    }
}
impl<F> PartialEq for Input<F> {
    fn eq(&self, other: &Self) -> bool {
        self.node == other.node
    }
}
impl<F> Eq for Input<F> {}

impl<F> Input<F> {
    pub(crate) fn new(node: NodeId) -> Self {
        Input { node, _facts: PhantomData }
    }
    /// The graph node behind the handle.
    pub fn node(&self) -> NodeId {
        self.node
    }
    /// The same input, read only for its tree.
    pub fn any(&self) -> AnyInput {
        AnyInput(self.node)
    }
}

/// An input read only for its tree, whatever facts its producer has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnyInput(NodeId);

impl AnyInput {
    pub fn node(&self) -> NodeId {
        self.0
    }
}

impl<F> From<Input<F>> for AnyInput {
    fn from(i: Input<F>) -> Self {
        i.any()
    }
}

/// What an action produces: its tree, its typed facts, and which paths of the tree are
/// placed in `hb-out/` when its target is requested.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output<F> {
    pub tree: Tree,
    pub facts: F,
    pub exports: Vec<String>,
}

impl<F: Facts> Output<F> {
    pub(crate) fn encode(self) -> ActionResult {
        ActionResult { tree: self.tree, facts: crate::encode_args(&self.facts), exports: self.exports }
    }

    /// The typed form of a stored result; `None` if its facts are not an `F`.
    pub(crate) fn decode(result: &ActionResult) -> Option<Output<F>> {
        let facts = postcard::from_bytes(&result.facts).ok()?;
        Some(Output { tree: result.tree.clone(), facts, exports: result.exports.clone() })
    }
}

impl Output<()> {
    /// A tree with no facts and nothing exported.
    pub fn tree(tree: Tree) -> Self {
        Output { tree, facts: (), exports: Vec::new() }
    }
}

/// An executable of the build machine an action runs (an interpreter): it enters the
/// key by digest, under its path, and is not one of the action's sources.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tool {
    pub path: String,
    pub digest: Digest,
}

/// The results of an action's declared inputs, read by handle.
pub struct Inputs<'a> {
    pub(crate) name: &'a str,
    pub(crate) results: Vec<(NodeId, &'a ActionResult)>,
}

impl<'a> Inputs<'a> {
    fn find(&self, node: NodeId) -> Result<&'a ActionResult, JobError> {
        self.results.iter().find(|(n, _)| *n == node).map(|(_, r)| *r).ok_or_else(|| {
            JobError::Failed(format!("{}: reads input #{node}, which it did not declare (a bug in hb)", self.name))
        })
    }

    /// The tree of an input.
    pub fn tree(&self, input: impl Into<AnyInput>) -> Result<&'a Tree, JobError> {
        Ok(&self.find(input.into().node())?.tree)
    }

    /// The tree and facts of an input.
    pub fn get<F: Facts>(&self, input: &Input<F>) -> Result<(&'a Tree, F), JobError> {
        let result = self.find(input.node())?;
        let facts = postcard::from_bytes(&result.facts).map_err(|e| {
            JobError::Failed(format!("{}: the facts of input #{} do not decode ({e})", self.name, input.node()))
        })?;
        Ok((&result.tree, facts))
    }
}

/// One kind of action. Implementations are pure functions of their key material:
/// [`Action::args`], the digests of [`Action::sources`] and [`Action::tools`], and the
/// results of [`Action::inputs`].
pub trait Action: Send + Sync + 'static {
    /// What the action tells its dependents besides its tree.
    type Facts: Facts;
    /// Action kind, part of the key.
    const KIND: &'static str;
    /// Bumped whenever the action's output for the same inputs changes.
    const VERSION: u32;
    /// Canonical arguments (see [`crate::encode_args`]).
    fn args(&self) -> Vec<u8>;
    /// The actions whose results this one reads, in the order they enter its key.
    fn inputs(&self) -> Vec<AnyInput> {
        Vec::new()
    }
    /// True for actions that should finish even when the build is stopping because of
    /// another failure (fetches: the user learns about every missing file at once).
    fn always_complete(&self) -> bool {
        false
    }
    /// Inputs from outside the graph (source files), named and digested.
    fn sources(&self, _ctx: &Ctx) -> Result<Vec<Source>, JobError> {
        Ok(Vec::new())
    }
    /// Executables of the build machine the action runs.
    fn tools(&self, _ctx: &Ctx) -> Result<Vec<Tool>, JobError> {
        Ok(Vec::new())
    }
    /// Produces the result from the declared inputs and what [`Action::sources`] returned.
    fn run(&self, ctx: &Ctx, inputs: &Inputs, sources: &[Source]) -> Result<Output<Self::Facts>, JobError>;
}

/// [`Action`] with its facts type erased, as the graph stores it.
pub(crate) trait Job: Send + Sync {
    fn kind(&self) -> &'static str;
    fn version(&self) -> u32;
    fn args(&self) -> Vec<u8>;
    fn always_complete(&self) -> bool;
    fn sources(&self, ctx: &Ctx) -> Result<Vec<Source>, JobError>;
    fn tools(&self, ctx: &Ctx) -> Result<Vec<Tool>, JobError>;
    fn run(&self, ctx: &Ctx, inputs: &Inputs, sources: &[Source]) -> Result<ActionResult, JobError>;
}

impl<A: Action> Job for A {
    fn kind(&self) -> &'static str {
        A::KIND
    }
    fn version(&self) -> u32 {
        A::VERSION
    }
    fn args(&self) -> Vec<u8> {
        Action::args(self)
    }
    fn always_complete(&self) -> bool {
        Action::always_complete(self)
    }
    fn sources(&self, ctx: &Ctx) -> Result<Vec<Source>, JobError> {
        Action::sources(self, ctx)
    }
    fn tools(&self, ctx: &Ctx) -> Result<Vec<Tool>, JobError> {
        Action::tools(self, ctx)
    }
    fn run(&self, ctx: &Ctx, inputs: &Inputs, sources: &[Source]) -> Result<ActionResult, JobError> {
        Ok(Action::run(self, ctx, inputs, sources)?.encode())
    }
}
