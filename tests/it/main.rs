//! The one integration-test binary; each area of upstep adds its own `mod` line.
mod preflight;
mod services;
mod support;
