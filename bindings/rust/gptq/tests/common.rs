//! Seeded data and paths shared by the tests.
#![allow(dead_code)] // each test crate uses part of it

use std::path::PathBuf;

/// Numerical Recipes' LCG: the same numbers on every platform, in [-1, 1).
pub struct Lcg(pub u32);

impl Lcg {
    pub fn next_f32(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(1664525).wrapping_add(1013904223);
        (self.0 >> 8) as f32 / 8388608.0 - 1.0
    }
    pub fn fill(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| scale * self.next_f32()).collect()
    }
}

/// models/tiny-llama-bytes of this repository.
pub fn tiny() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../models/tiny-llama-bytes")
}
