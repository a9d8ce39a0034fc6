//! Planning: [`collect`] walks the target graph from the requested labels (depth first,
//! detecting cycles and unknown labels, each error at the BUILD.toml line that names the
//! label), and [`plan`] has each target's rule analyse and expand it, dependencies first,
//! so that every rule sees its dependencies' providers.

use std::collections::BTreeMap;

use hb_config::{ConfigError, Label, Target, Workspace};
use hb_engine::{AnyInput, Graph};

use crate::rule::{Actions, Cx, Providers, Rules};
use crate::{PlanOptions, RulesError};

/// The targets reachable from `roots`, each after its dependencies.
pub fn collect(ws: &mut Workspace, roots: &[Label]) -> Result<Vec<Target>, RulesError> {
    #[derive(PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    let mut marks: BTreeMap<Label, Mark> = BTreeMap::new();
    let mut order = Vec::new();
    // Explicit stack of (target, next dependency index) for deep graphs.
    for root in roots {
        if marks.contains_key(root) {
            continue;
        }
        let mut stack: Vec<(Target, usize)> = vec![(ws.target(root)?.clone(), 0)];
        marks.insert(root.clone(), Mark::Visiting);
        while let Some((target, next)) = stack.last_mut() {
            let Some((dep, loc)) = target.deps.get(*next).cloned() else {
                if let Some((t, _)) = stack.pop() {
                    marks.insert(t.label.clone(), Mark::Done);
                    order.push(t);
                }
                continue;
            };
            *next += 1;
            match marks.get(&dep) {
                Some(Mark::Done) => {}
                Some(Mark::Visiting) => {
                    let start = stack.iter().position(|(t, _)| t.label == dep).unwrap_or(0);
                    let mut names: Vec<String> = stack.iter().skip(start).map(|(t, _)| t.label.to_string()).collect();
                    names.push(dep.to_string());
                    return Err(RulesError::Cycle { cycle: names.join(" -> "), location: loc });
                }
                None => {
                    let t = ws.target(&dep).map_err(|e| match e {
                        // Say where the unknown label was written.
                        ConfigError::NoTarget { .. } | ConfigError::NoPackage { .. } => {
                            RulesError::Invalid { message: e.to_string(), location: loc.clone() }
                        }
                        other => other.into(),
                    })?;
                    marks.insert(dep, Mark::Visiting);
                    stack.push((t.clone(), 0));
                }
            }
        }
    }
    Ok(order)
}

/// The action graph of the requested targets, and what each target provides.
pub struct Plan {
    pub graph: Graph,
    pub providers: BTreeMap<Label, Providers>,
}

impl Plan {
    /// The action whose exports are `label`'s outputs.
    pub fn output(&self, label: &Label) -> Option<AnyInput> {
        self.providers.get(label).map(|p| p.output)
    }
}

/// Expands the targets reachable from `roots` into actions.
pub fn plan(ws: &mut Workspace, rules: &Rules, roots: &[Label], opts: &PlanOptions) -> Result<Plan, RulesError> {
    let targets = collect(ws, roots)?;
    let mut actions = Actions::default();
    let mut providers: BTreeMap<Label, Providers> = BTreeMap::new();
    let root_lock = std::cell::OnceCell::new();
    let root_summaries = std::cell::RefCell::default();
    for target in &targets {
        let package = ws.package(&target.label.package)?.clone();
        let mut cx = Cx {
            target,
            package: &package,
            settings: &ws.settings,
            platform: ws.platform,
            platforms: &ws.platforms,
            workspace_root: &ws.root,
            opts,
            actions: &mut actions,
            providers: &providers,
            root_lock: &root_lock,
            root_summaries: &root_summaries,
        };
        let provided = rules.plan(&mut cx)?;
        providers.insert(target.label.clone(), provided);
    }
    Ok(Plan { graph: actions.graph, providers })
}
