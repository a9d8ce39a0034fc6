//! The rule API. A rule kind is one type implementing [`Rule`]: its schema (the
//! attribute struct of its `[[kind]]` tables and the checks that need only the
//! BUILD.toml), its analysis (validation against the workspace and its dependencies'
//! [`Providers`], with BUILD.toml locations) and its expansion into actions, which
//! returns the providers its dependents consume. Rules never open another target's files:
//! what a dependency offers is in its providers. [`Rules`] is the registry; a new rule is
//! its own module plus one line in [`Rules::builtin`].

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::Path;
use std::sync::Arc;

use hb_config::{
    ConfigError, Declared, Document, Label, Location, Package, Platform, Schema, Schemas, Target, WorkspaceSettings,
};
use hb_engine::{Action, AnyInput, Graph, Input};
use serde::de::DeserializeOwned;
use toml::Spanned;

use crate::{PlanOptions, RulesError};

/// One rule kind.
pub trait Rule: Send + Sync + 'static {
    /// The name of its array of tables in BUILD.toml (`files` for `[[files]]`).
    const KIND: &'static str;
    /// Its attributes, read with the document's spans (use `deny_unknown_fields`).
    type Attrs: DeserializeOwned + Debug + Send + Sync + 'static;
    /// What analysis found and expansion needs.
    type Analysis;

    /// The target's `name` attribute.
    fn name(attrs: &Self::Attrs) -> &Spanned<String>;
    /// The labels of the targets it depends on, as written.
    fn deps(_attrs: &Self::Attrs) -> Vec<Spanned<String>> {
        Vec::new()
    }
    /// Checks that need only the BUILD.toml, run when the file is read.
    fn check(_pkg: &Package, _attrs: &Self::Attrs) -> Result<(), ConfigError> {
        Ok(())
    }
    /// Validates the target against the workspace and its dependencies' providers.
    fn analyse(&self, cx: &Cx, attrs: &Self::Attrs) -> Result<Self::Analysis, RulesError>;
    /// Adds the target's actions and says what it provides.
    fn expand(&self, cx: &mut Cx, attrs: &Self::Attrs, analysis: Self::Analysis) -> Result<Providers, RulesError>;
}

/// A provider: a typed record a target offers its dependents.
pub trait Provider: Any + Send + Sync {}

/// What a target provides: the action whose exports are its outputs in `hb-out/`, and
/// typed providers, at most one of each type.
#[derive(Clone)]
pub struct Providers {
    pub output: AnyInput,
    items: Vec<Arc<dyn Any + Send + Sync>>,
}

impl Providers {
    pub fn new(output: impl Into<AnyInput>) -> Self {
        Providers { output: output.into(), items: Vec::new() }
    }

    /// Adds (or replaces) the provider of `P`'s type.
    pub fn with<P: Provider>(mut self, p: P) -> Self {
        self.items.retain(|i| !i.is::<P>());
        self.items.push(Arc::new(p));
        self
    }

    pub fn get<P: Provider>(&self) -> Option<&P> {
        self.items.iter().find_map(|i| i.downcast_ref::<P>())
    }
}

/// The graph under construction, with actions shared between targets.
#[derive(Default)]
pub struct Actions {
    pub graph: Graph,
    /// Shared actions' handles by name (one fetch per locked file, whoever needs it).
    shared: BTreeMap<String, Box<dyn Any + Send + Sync>>,
}

impl Actions {
    pub fn add<A: Action>(&mut self, name: impl Into<String>, action: A) -> Input<A::Facts> {
        self.graph.add(name, action)
    }

    /// The action named `name` if a target added it already, else `make()` added under it.
    /// Every caller must make the same action for one name.
    pub fn shared<A: Action>(&mut self, name: String, make: impl FnOnce() -> A) -> Input<A::Facts> {
        if let Some(input) = self.shared.get(&name).and_then(|h| h.downcast_ref::<Input<A::Facts>>()) {
            return *input;
        }
        let input = self.graph.add(name.clone(), make());
        self.shared.insert(name, Box::new(input));
        input
    }
}

/// What a rule sees of the build while it analyses and expands one target.
pub struct Cx<'a> {
    pub target: &'a Target,
    pub package: &'a Package,
    pub settings: &'a WorkspaceSettings,
    /// The platform being built.
    pub platform: &'static Platform,
    /// Every platform the workspace builds (locks cover each).
    pub platforms: &'a [&'static Platform],
    pub workspace_root: &'a Path,
    pub opts: &'a PlanOptions,
    pub actions: &'a mut Actions,
    pub(crate) providers: &'a BTreeMap<Label, Providers>,
    /// hb-root.lock, read once per plan by the first rule that asks (it is large: every
    /// platform's roots and compile roots), through [`Cx::root_lock`].
    pub(crate) root_lock: &'a std::cell::OnceCell<Result<Option<hb_root::RootLock>, String>>,
    /// Each root's [`crate::roots::RootSummary`] by its extra packages, made once per plan.
    pub(crate) root_summaries: &'a std::cell::RefCell<BTreeMap<Vec<String>, crate::roots::RootSummary>>,
}

impl Cx<'_> {
    /// The workspace's root lock (`None` if there is none), parsed once per plan.
    pub fn root_lock(&self) -> Result<Option<&hb_root::RootLock>, String> {
        let loaded = self.root_lock.get_or_init(|| {
            match &self.opts.parsed_cache {
                Some(cache) => hb_root::RootLock::load_cached(self.workspace_root, cache),
                None => hb_root::RootLock::load(self.workspace_root),
            }
            .map_err(|e| e.to_string())
        });
        loaded.as_ref().map(Option::as_ref).map_err(Clone::clone)
    }

    /// The target's label as text, e.g. `//demosite:app`.
    pub fn label(&self) -> String {
        self.target.label.to_string()
    }

    /// Where a span of the target's BUILD.toml is.
    pub fn locate(&self, span: std::ops::Range<usize>) -> Location {
        self.package.locate(span)
    }

    /// An error at a span of the target's BUILD.toml.
    pub fn invalid(&self, span: std::ops::Range<usize>, message: impl Into<String>) -> RulesError {
        RulesError::Invalid { message: message.into(), location: self.locate(span) }
    }

    /// The target's dependencies: label, where it is written, and its providers.
    pub fn deps(&self) -> impl Iterator<Item = (&Label, &Location, &Providers)> {
        self.target.deps.iter().filter_map(|(l, at)| Some((l, at, self.providers.get(l)?)))
    }

    /// The providers of a dependency of the target.
    pub fn dep(&self, label: &Label) -> Option<&Providers> {
        self.target.deps.iter().any(|(l, _)| l == label).then(|| self.providers.get(label)).flatten()
    }
}

/// A rule's attributes as a target holds them.
struct Held<R: Rule>(R::Attrs);

impl<R: Rule> Debug for Held<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<R: Rule> hb_config::Attrs for Held<R> {
    fn kind(&self) -> &'static str {
        R::KIND
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The attributes of `t` if it is a target of rule `R`.
pub fn attrs_of<R: Rule>(t: &Target) -> Option<&R::Attrs> {
    t.rule.as_any().downcast_ref::<Held<R>>().map(|h| &h.0)
}

/// A rule with its types erased, as the registry holds it.
trait ErasedRule: Schema {
    fn plan(&self, cx: &mut Cx) -> Result<Providers, RulesError>;
}

struct Registered<R: Rule>(R);

impl<R: Rule> Schema for Registered<R> {
    fn kind(&self) -> &'static str {
        R::KIND
    }
    fn parse(&self, pkg: &Package, doc: &Document) -> Result<Vec<Declared>, ConfigError> {
        hb_config::build_file::parse_rule(pkg, doc, R::KIND, R::check, |a: R::Attrs| Declared {
            name: R::name(&a).clone(),
            deps: R::deps(&a),
            attrs: Arc::new(Held::<R>(a)),
        })
    }
}

impl<R: Rule> ErasedRule for Registered<R> {
    fn plan(&self, cx: &mut Cx) -> Result<Providers, RulesError> {
        let target = cx.target;
        let attrs = attrs_of::<R>(target).ok_or_else(|| RulesError::Invalid {
            message: format!("{} is not a {} target (a bug in hb)", target.label, R::KIND),
            location: target.location.clone(),
        })?;
        let analysis = self.0.analyse(cx, attrs)?;
        self.0.expand(cx, attrs, analysis)
    }
}

/// The rule kinds a build knows.
#[derive(Clone, Default)]
pub struct Rules {
    rules: Vec<Arc<dyn ErasedRule>>,
}

impl Rules {
    /// hb's own rules. Register a new rule kind here.
    pub fn builtin() -> Rules {
        Rules::default()
            .with(crate::rules::files::Files)
            .with(crate::rules::python_app::PythonApp)
            .with(crate::rules::build_step::BuildStep)
            .with(crate::rules::deb::Deb)
            .with(crate::rules::apt_repo::AptRepo)
    }

    /// These rules and `rule`.
    pub fn with<R: Rule>(mut self, rule: R) -> Rules {
        self.rules.push(Arc::new(Registered(rule)));
        self
    }

    /// How hb-config reads the rules' tables.
    pub fn schemas(&self) -> Schemas {
        self.rules.iter().map(|r| r.clone() as Arc<dyn Schema>).collect()
    }

    pub(crate) fn plan(&self, cx: &mut Cx) -> Result<Providers, RulesError> {
        let kind = cx.target.rule.kind();
        let rule = self.rules.iter().find(|r| r.kind() == kind).ok_or_else(|| RulesError::Invalid {
            message: format!("no rule `{kind}` is registered (a bug in hb)"),
            location: cx.target.location.clone(),
        })?;
        rule.plan(cx)
    }
}
