//! The WGSL kernels and the parameters they share.

pub const SCORE: &str = include_str!("shaders/score.wgsl");
pub const EMBED_BAG: &str = include_str!("shaders/embed_bag.wgsl");
pub const GRADIENT: &str = include_str!("shaders/gradient.wgsl");

/// Invocations per workgroup of the scoring kernel (one candidate each).
pub const SCORE_WORKGROUP: usize = 64;
/// Examples per workgroup of the gradient kernel.
pub const GRADIENT_WORKGROUP: usize = 256;

/// The `Params` uniform every kernel declares (32 bytes; unused fields are zero).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    /// Candidates, texts or examples.
    pub count: u32,
    /// D for the head and the embedding bag, P (the parameter count) for the gradient.
    pub dims: u32,
    /// Padded token ids per text (embedding bag).
    pub width: u32,
    /// Workgroups along x; a grid wider than the per-dimension limit continues along y.
    pub groups_x: u32,
    pub clip_norm: f32,
    /// Workgroups that hold work (gradient; the grid may have a few more).
    pub groups: u32,
    /// 1 when the head has a lexical term (scoring).
    pub lexical: u32,
    pub _pad: u32,
}

/// Lays `groups` workgroups out as an x × y grid within the per-dimension limit.
pub fn grid(groups: u32, max_per_dimension: u32) -> (u32, u32) {
    let x = groups.clamp(1, max_per_dimension);
    (x, groups.div_ceil(x).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_covers_every_group_within_the_limit() {
        assert_eq!(grid(0, 65_535), (1, 1));
        assert_eq!(grid(10, 65_535), (10, 1));
        assert_eq!(grid(65_536, 65_535), (65_535, 2));
        let (x, y) = grid(200_000, 65_535);
        assert!(x * y >= 200_000 && x <= 65_535);
    }
}
