//! Prints, as JSON, what the SDK expects from Envoy and offers to it: per API family the ABI
//! version string and the callbacks it resolves, and the hooks it exports (the same for every
//! family). The end-to-end ABI tests hold these lists against the symbols of real Envoy binaries.

fn json_list(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

fn main() {
    let families: Vec<String> = envoy_module::Family::ALL
        .iter()
        .map(|f| {
            format!(
                "{:?}: {{\"releases\": {:?}, \"abi_version\": {:?}, \"required_callbacks\": {}}}",
                f.name(),
                f.releases(),
                f.abi_version(),
                json_list(f.required_callbacks()),
            )
        })
        .collect();
    println!(
        "{{\"families\": {{{}}}, \"abi_override_env\": {:?}, \"exported_hooks\": {}}}",
        families.join(", "),
        envoy_module::ABI_OVERRIDE_ENV,
        json_list(envoy_module::exported_hooks()),
    );
}
