//! Prints, as JSON, what this build of the SDK expects from Envoy and offers to it: the target,
//! the ABI version string, the callbacks it resolves and the hooks it exports. The end-to-end ABI
//! tests hold these lists against the symbols of a real Envoy binary.

fn json_list(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

fn main() {
    println!(
        "{{\"target_envoy\": {:?}, \"abi_version\": {:?}, \"required_callbacks\": {}, \"exported_hooks\": {}}}",
        envoy_module::target_envoy(),
        envoy_module::abi_version(),
        json_list(envoy_module::required_callbacks()),
        json_list(envoy_module::exported_hooks()),
    );
}
