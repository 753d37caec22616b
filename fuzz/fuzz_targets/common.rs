//! What every fuzz target checks of a compile.
use firewall_agent::{
    compiler::{CompileOptions, Compiled, IdAllocator, compile},
    model::ClusterModel,
};

/// Compiles `model` for `node-1` twice from fresh allocators: the two must be equal (the agent
/// diffs against the previous compile, so non-determinism would rewrite maps for nothing).
pub fn compile_twice(model: &ClusterModel) -> Compiled {
    let opts = CompileOptions {
        node_name: "node-1".into(),
        ..Default::default()
    };
    let a = compile(model, &opts, &mut IdAllocator::default());
    let b = compile(model, &opts, &mut IdAllocator::default());
    assert_eq!(a, b, "compile is not deterministic");
    a
}
