//! WebGPU for the wasm layer: find the browser's adapter once, score large catalogs through it, and
//! fall back to the CPU on any GPU error (a lost device included) — the caller always gets scores,
//! and `backend` says which path made them. The kernels and the CPU reference live in `feedloop-gpu`.

use std::cell::RefCell;
use std::rc::Rc;

use feedloop_core::head::RewardHead;
use feedloop_core::Embeddings;
use feedloop_gpu::{fallback, GpuBackend, GPU_MIN_CANDIDATES};
use wasm_bindgen::JsValue;

/// When catalog scoring may use the GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuMode {
    /// On a hardware adapter from `GPU_MIN_CANDIDATES` candidates on (never on a software adapter
    /// such as SwiftShader, which is slower than the CPU path); the CPU otherwise. The adapter is
    /// requested at the first catalog of that size.
    Auto,
    /// On any adapter, whatever the batch size (benchmarks, tests, or an app that knows better).
    Always,
    /// Never: the CPU path only, and no adapter is requested.
    Off,
}

impl GpuMode {
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "auto" => Some(Self::Auto),
            "always" => Some(Self::Always),
            "off" => Some(Self::Off),
            _ => None,
        }
    }
}

/// The page's GPU, shared by the ranker's async calls. The device sits behind an `Rc` so no
/// `RefCell` borrow is held across an await; once lost it is dropped and the page stays on the CPU.
#[derive(Debug)]
pub struct GpuState {
    mode: GpuMode,
    detected: bool,
    gpu: Option<Rc<GpuBackend>>,
    /// The backend of the most recent catalog scoring (`"cpu"` before any).
    last_backend: &'static str,
    /// Why the GPU was tried and not used last time, if it was.
    last_error: Option<String>,
}

impl Default for GpuState {
    fn default() -> Self {
        Self {
            mode: GpuMode::Off,
            detected: false,
            gpu: None,
            last_backend: "cpu",
            last_error: None,
        }
    }
}

impl GpuState {
    pub fn last_backend(&self) -> &'static str {
        self.last_backend
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.clone()
    }

    /// What the adapter says about itself, while one is held.
    pub fn adapter(&self) -> Option<String> {
        self.gpu.as_ref().map(|gpu| {
            let info = gpu.adapter_info();
            let kind = if gpu.is_software() {
                "software"
            } else {
                "hardware"
            };
            // Browsers may withhold the name (Chromium gives none for SwiftShader).
            let name = if info.name.is_empty() {
                "unnamed adapter".to_string()
            } else {
                info.name.clone()
            };
            format!("{name} ({kind}, {})", gpu.backend_name())
        })
    }
}

/// Sets the mode. `"always"` asks the browser for an adapter now (once); `"auto"` waits for the first
/// catalog large enough to use one, so pages that never score one never request an adapter (Chromium
/// logs "No available adapters." for every request on a machine without one). Never fails: no
/// `navigator.gpu`, no adapter or a device that cannot be opened all mean the CPU.
pub async fn configure(state: Rc<RefCell<GpuState>>, mode: GpuMode) {
    state.borrow_mut().mode = mode;
    if mode == GpuMode::Always {
        detect(&state).await;
    }
}

async fn detect(state: &Rc<RefCell<GpuState>>) {
    if state.borrow().detected {
        return;
    }
    let gpu = if browser_has_webgpu() {
        GpuBackend::new().await.ok().flatten().map(Rc::new)
    } else {
        None
    };
    let mut s = state.borrow_mut();
    s.detected = true;
    s.gpu = gpu;
}

/// `navigator.gpu` exists (checked before wgpu is asked, so hosts without WebGPU — Node, old
/// browsers — never reach it).
fn browser_has_webgpu() -> bool {
    let global = js_sys::global();
    js_sys::Reflect::get(&global, &JsValue::from_str("navigator"))
        .ok()
        .filter(|navigator| navigator.is_object())
        .and_then(|navigator| js_sys::Reflect::get(&navigator, &JsValue::from_str("gpu")).ok())
        .is_some_and(|gpu| gpu.is_object())
}

/// Scores a catalog with `head` on the GPU when the mode and batch allow it, else (or on any GPU
/// error) on the CPU; records which backend ran.
pub async fn score(
    state: Rc<RefCell<GpuState>>,
    context: Vec<f32>,
    catalog: Embeddings,
    lexical: Option<Vec<f32>>,
    head: RewardHead,
    max_tokens: usize,
) -> Vec<f32> {
    let wants_detection = {
        let s = state.borrow();
        s.mode == GpuMode::Auto && !s.detected && catalog.len() >= GPU_MIN_CANDIDATES
    };
    if wants_detection {
        detect(&state).await;
    }
    let (gpu, force) = {
        let s = state.borrow();
        match s.mode {
            GpuMode::Off => (None, false),
            mode => (s.gpu.clone(), mode == GpuMode::Always),
        }
    };
    let scored = fallback::score(
        gpu.as_deref(),
        force,
        &context,
        &catalog,
        lexical.as_deref(),
        &head,
        max_tokens,
    )
    .await;
    let mut s = state.borrow_mut();
    s.last_backend = scored.backend;
    s.last_error = scored.gpu_error.map(|e| e.to_string());
    if s.gpu.as_ref().is_some_and(|g| g.is_lost()) {
        s.gpu = None;
    }
    scored.value
}
