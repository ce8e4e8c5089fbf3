//! Envoy 1.36 per-direction API (in progress).

compile_error!("envoy-module: the envoy-1-36 target is not implemented yet");
