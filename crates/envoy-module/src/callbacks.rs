//! Run-time resolution of Envoy's callbacks.
//!
//! Callbacks are looked up with `dlsym(RTLD_DEFAULT, ..)` once, in `on_program_init`, instead of
//! being linked: test binaries then link without Envoy, and a module loaded into an Envoy of another
//! API family fails with a message naming the missing callback instead of a lazy-binding crash.

use std::ffi::{CStr, c_void};

/// Address of `name` in the process's global symbol scope, or null.
pub(crate) fn lookup(name: &CStr) -> *mut c_void {
    // SAFETY: `name` is NUL-terminated; dlsym only reads it and RTLD_DEFAULT is always valid.
    unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) }
}

/// Whether the running process exports `name` (used to hint at the right target on mismatch).
pub(crate) fn exported(name: &CStr) -> bool {
    !lookup(name).is_null()
}

/// Declares the callback table of one API family: a struct named `$table` of typed function
/// pointers whose field names are the callback names without the `envoy_dynamic_module_callback_`
/// prefix, the list of names, and a resolver that reports every missing symbol.
macro_rules! callback_table {
    ($table:ident; $( $field:ident : fn($($arg:ty),* $(,)?) $(-> $ret:ty)? ; )*) => {
        pub(crate) struct $table {
            $( pub(crate) $field: unsafe extern "C" fn($($arg),*) $(-> $ret)?, )*
        }

        pub(crate) const CALLBACK_NAMES: &[&str] = &[
            $( concat!("envoy_dynamic_module_callback_", stringify!($field)), )*
        ];

        impl $table {
            /// Resolve every callback, or name all that are missing.
            pub(crate) fn resolve() -> Result<Self, Vec<&'static str>> {
                let mut missing = Vec::new();
                $(
                    let $field = $crate::callbacks::lookup(
                        match ::std::ffi::CStr::from_bytes_with_nul(
                            concat!("envoy_dynamic_module_callback_", stringify!($field), "\0").as_bytes(),
                        ) {
                            Ok(name) => name,
                            Err(_) => unreachable!("symbol names are NUL-terminated literals"),
                        },
                    );
                    if $field.is_null() {
                        missing.push(concat!("envoy_dynamic_module_callback_", stringify!($field)));
                    }
                )*
                if !missing.is_empty() {
                    return Err(missing);
                }
                Ok(Self {
                    $(
                        // SAFETY: the symbol is non-null and is Envoy's callback of that name, whose C
                        // signature for this API family is the one declared in this table.
                        $field: unsafe {
                            ::std::mem::transmute::<*mut ::std::ffi::c_void, unsafe extern "C" fn($($arg),*) $(-> $ret)?>($field)
                        },
                    )*
                })
            }
        }
    };
}
pub(crate) use callback_table;
