//! `enum_with_all!`: an enum whose `ALL` lists every variant in declaration order. Contracts
//! (exit codes, the journal's `ended_by`) are checked against `ALL`, so a variant added to the
//! enum is in the list without anyone remembering to add it.

/// Declares the enum as written and `pub const ALL: &[Self]`, every variant in order.
macro_rules! enum_with_all {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident $(= $value:expr)? ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis enum $name {
            $( $(#[$vmeta])* $variant $(= $value)? ),*
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];
        }
    };
}
