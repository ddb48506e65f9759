//! The wgpu device, the three pipelines, and one upload → dispatch → readback round per call.

use std::sync::{Arc, Mutex};

use feedloop_core::head::{length_feature, RewardHead};
use feedloop_core::learning::Example;
use feedloop_core::{Embeddings, RewardModel};
use futures_channel::oneshot;

use crate::kernels::{self, grid, Params, GRADIENT_WORKGROUP, SCORE_WORKGROUP};
use crate::{GpuError, Result};

/// A GPU device with the feedloop kernels compiled. Cheap calls after [`GpuBackend::new`]; keep one.
#[derive(Debug)]
pub struct GpuBackend {
    device: wgpu::Device,
    queue: wgpu::Queue,
    adapter: wgpu::AdapterInfo,
    /// Set by the device-lost callback (and by uncaptured errors): the reason, once lost.
    lost: Arc<Mutex<Option<String>>>,
    score: wgpu::ComputePipeline,
    embed_bag: wgpu::ComputePipeline,
    gradient: wgpu::ComputePipeline,
}

/// Candidate embeddings kept on the GPU, to score them against many contexts or heads without
/// uploading them again.
#[derive(Debug)]
pub struct ResidentCandidates {
    count: usize,
    dimensions: usize,
    embeddings: wgpu::Buffer,
    lengths: wgpu::Buffer,
}

impl ResidentCandidates {
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// A model's dequantized token table on the GPU (uploaded once, 7.8 MB for the default model).
#[derive(Debug)]
pub struct GpuTokenTable {
    table: wgpu::Buffer,
    vocab_size: usize,
    dimensions: usize,
    max_tokens: usize,
}

impl GpuBackend {
    /// Opens the best adapter and compiles the kernels. `Ok(None)` when there is no adapter (no
    /// WebGPU in the browser, or `requestAdapter()` gave null; no Vulkan driver natively).
    pub async fn new() -> Result<Option<Self>> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
        let options = wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        };
        let Ok(adapter) = instance.request_adapter(&options).await else {
            return Ok(None);
        };
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("feedloop"),
                // The adapter's own limits: large batches need more than the WebGPU defaults.
                required_limits: adapter.limits(),
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::RequestDevice(e.to_string()))?;

        let lost = Arc::new(Mutex::new(None));
        let on_lost = Arc::clone(&lost);
        device.set_device_lost_callback(move |reason, message| {
            record(&on_lost, format!("{reason:?}: {message}"));
        });
        // Errors outside an error scope would panic natively by default; record them instead.
        let on_error = Arc::clone(&lost);
        device.on_uncaptured_error(Arc::new(move |error: wgpu::Error| {
            record(&on_error, error.to_string());
        }));

        let scope = ErrorScope::push(&device);
        let score = pipeline(&device, "feedloop score", kernels::SCORE);
        let embed_bag = pipeline(&device, "feedloop embed_bag", kernels::EMBED_BAG);
        let gradient = pipeline(&device, "feedloop gradient", kernels::GRADIENT);
        scope.pop().await?;

        Ok(Some(Self {
            device,
            queue,
            adapter: adapter.get_info(),
            lost,
            score,
            embed_bag,
            gradient,
        }))
    }

    /// `"vulkan"`, `"webgpu"`, … — the API the device runs on.
    pub fn backend_name(&self) -> &'static str {
        self.adapter.backend.to_str()
    }

    /// What the adapter says about itself (name, driver, device type), for logs and test output.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.adapter
    }

    /// Whether the adapter is a CPU emulating a GPU (lavapipe/llvmpipe natively), where
    /// [`crate::use_gpu`] keeps to the CPU path.
    pub fn is_software(&self) -> bool {
        self.adapter.device_type == wgpu::DeviceType::Cpu
    }

    /// Whether the device was lost (or hit an error outside a call). Every call then fails with
    /// [`GpuError::DeviceLost`]; open a new backend or use the CPU.
    pub fn is_lost(&self) -> bool {
        self.lost_reason().is_some()
    }

    /// Gives the device up now (as a browser may at any time); later calls fail with
    /// [`GpuError::DeviceLost`].
    pub fn destroy(&self) {
        // The device-lost callback records it (as for a loss the browser decides on).
        self.device.destroy();
    }

    /// Scores every candidate for `context` with `head` (candidate n-token counts give ℓ(n) with
    /// `max_tokens`): the same numbers as [`crate::cpu::score`]. Uploads the candidates each call;
    /// see [`GpuBackend::upload_candidates`] to keep them on the GPU.
    pub async fn score(
        &self,
        context: &[f32],
        candidates: &Embeddings,
        lexical: Option<&[f32]>,
        head: &RewardHead,
        max_tokens: usize,
    ) -> Result<Vec<f32>> {
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let resident = self.upload_candidates(candidates, max_tokens).await?;
        self.score_resident(&resident, context, lexical, head).await
    }

    /// Uploads candidate embeddings (and their ℓ(n), computed here with the CPU's formula).
    pub async fn upload_candidates(
        &self,
        candidates: &Embeddings,
        max_tokens: usize,
    ) -> Result<ResidentCandidates> {
        self.check_alive()?;
        let (count, dimensions) = (candidates.len(), candidates.dimensions);
        if candidates.values.len() != count * dimensions {
            return Err(GpuError::InvalidInput(format!(
                "{count} candidates of {dimensions} dimensions need {} values, got {}",
                count * dimensions,
                candidates.values.len()
            )));
        }
        let lengths: Vec<f32> = candidates
            .token_counts
            .iter()
            .map(|&n| length_feature(n, max_tokens))
            .collect();
        // Column-major (D × N): neighbouring invocations read neighbouring floats (coalesced on a
        // GPU, vector loads on lavapipe). Each invocation still adds in the CPU's order.
        let mut columns = vec![0f32; candidates.values.len()];
        for (i, row) in candidates
            .values
            .chunks_exact(dimensions.max(1))
            .enumerate()
        {
            for (k, &v) in row.iter().enumerate() {
                columns[k * count + i] = v;
            }
        }
        let scope = ErrorScope::push(&self.device);
        let embeddings = self.storage("candidates", bytemuck::cast_slice(&columns))?;
        let lengths = self.storage("lengths", bytemuck::cast_slice(&lengths))?;
        scope.pop().await.map_err(|e| self.lost_or(e))?;
        Ok(ResidentCandidates {
            count,
            dimensions,
            embeddings,
            lengths,
        })
    }

    /// Scores candidates already on the GPU: only the context, the head and (for a head with a
    /// lexical term) each candidate's λ against this context go up; the scores come back.
    pub async fn score_resident(
        &self,
        candidates: &ResidentCandidates,
        context: &[f32],
        lexical: Option<&[f32]>,
        head: &RewardHead,
    ) -> Result<Vec<f32>> {
        let d = candidates.dimensions;
        if context.len() != d || head.dimensions() != d {
            return Err(GpuError::InvalidInput(format!(
                "the candidates have {d} dimensions, the context {} and the head {}",
                context.len(),
                head.dimensions()
            )));
        }
        match (head.lexical.is_some(), lexical) {
            (true, Some(l)) if l.len() == candidates.count => {}
            (false, None) => {}
            (true, _) => {
                return Err(GpuError::InvalidInput(format!(
                    "a head with a lexical term needs {} lexical values",
                    candidates.count
                )))
            }
            (false, Some(_)) => {
                return Err(GpuError::InvalidInput(
                    "lexical values given for a head without a lexical term".into(),
                ))
            }
        }
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let groups = to_u32(candidates.count.div_ceil(SCORE_WORKGROUP))?;
        let params = Params {
            count: to_u32(candidates.count)?,
            dims: to_u32(d)?,
            lexical: u32::from(lexical.is_some()),
            ..Default::default()
        };
        let scope = ErrorScope::push(&self.device);
        let theta = self.storage("head", bytemuck::cast_slice(&head.to_vector()))?;
        let context = self.storage("context", bytemuck::cast_slice(context))?;
        // A binding needs a buffer even when the head has no lexical term (the kernel skips it).
        let zero = [0f32];
        let lexical = self.storage("lexical", bytemuck::cast_slice(lexical.unwrap_or(&zero)))?;
        let run = self.dispatch(
            &self.score,
            params,
            groups,
            &[
                &theta,
                &context,
                &candidates.embeddings,
                &candidates.lengths,
                &lexical,
            ],
            candidates.count,
        );
        self.finish(scope, run).await
    }

    /// Uploads `model`'s dequantized token table for [`GpuBackend::embed_bag`].
    pub async fn upload_token_table(&self, model: &RewardModel) -> Result<GpuTokenTable> {
        self.check_alive()?;
        let info = model.info();
        let table = model.token_table().ok_or_else(|| {
            GpuError::InvalidInput("the model's body holds no [vocab × dimensions] table".into())
        })?;
        let scope = ErrorScope::push(&self.device);
        let table = self.storage("token table", bytemuck::cast_slice(&table))?;
        scope.pop().await.map_err(|e| self.lost_or(e))?;
        Ok(GpuTokenTable {
            table,
            vocab_size: info.vocab_size,
            dimensions: info.dimensions,
            max_tokens: info.max_tokens,
        })
    }

    /// Embeds tokenized texts: the same as `RewardModel::embed_ids` (the L2-normalized masked mean
    /// of the token rows, the zero vector for a text with no tokens), with the same input checks.
    pub async fn embed_bag(&self, table: &GpuTokenTable, ids: &[Vec<u32>]) -> Result<Embeddings> {
        let dimensions = table.dimensions;
        let token_counts: Vec<usize> = ids.iter().map(Vec::len).collect();
        if ids.is_empty() {
            return Ok(Embeddings {
                dimensions,
                values: Vec::new(),
                token_counts,
                token_ids: Vec::new(),
            });
        }
        for (row, r) in ids.iter().enumerate() {
            if r.len() > table.max_tokens {
                return Err(GpuError::InvalidInput(format!(
                    "text {row} has {} tokens, the model takes at most {}",
                    r.len(),
                    table.max_tokens
                )));
            }
            if let Some(bad) = r.iter().find(|&&id| id as usize >= table.vocab_size) {
                return Err(GpuError::InvalidInput(format!(
                    "text {row} has token id {bad}, outside the vocabulary of {}",
                    table.vocab_size
                )));
            }
        }
        let width = token_counts.iter().copied().max().unwrap_or(0).max(1);
        let mut padded = vec![0u32; ids.len() * width];
        for (row, r) in ids.iter().enumerate() {
            padded[row * width..row * width + r.len()].copy_from_slice(r);
        }
        let counts: Vec<u32> = ids.iter().map(|r| r.len() as u32).collect();
        let params = Params {
            count: to_u32(ids.len())?,
            dims: to_u32(dimensions)?,
            width: to_u32(width)?,
            ..Default::default()
        };
        let scope = ErrorScope::push(&self.device);
        let token_ids = self.storage("token ids", bytemuck::cast_slice(&padded))?;
        let counts = self.storage("token counts", bytemuck::cast_slice(&counts))?;
        let run = self.dispatch(
            &self.embed_bag,
            params,
            params.count,
            &[&table.table, &token_ids, &counts],
            ids.len() * dimensions,
        );
        let values = self.finish(scope, run).await?;
        Ok(Embeddings {
            dimensions,
            values,
            token_counts,
            token_ids: ids.iter().flat_map(|r| r.iter().copied()).collect(),
        })
    }

    /// Σᵢ wᵢ·clip(∇Lᵢ(θ)) over `examples`: the same as [`crate::cpu::gradient`] (per-example
    /// gradients of the logistic loss clipped to `clip_norm` as `learning::clipped_gradient` does,
    /// an example with a non-finite gradient left out). All 2·D + 3 coordinates; `sgd_step` does not
    /// learn the last one (the bias), and the L2 pull is the caller's.
    pub async fn gradient(
        &self,
        theta: &[f32],
        examples: &[Example],
        clip_norm: f32,
    ) -> Result<Vec<f32>> {
        let p = theta.len();
        if !(clip_norm.is_finite() && clip_norm > 0.0) {
            return Err(GpuError::InvalidInput(format!(
                "clip_norm must be finite and positive, got {clip_norm}"
            )));
        }
        if let Some(i) = examples.iter().position(|e| e.x.len() != p) {
            return Err(GpuError::InvalidInput(format!(
                "example {i} has {} features, θ has {p}",
                examples[i].x.len()
            )));
        }
        if examples.is_empty() || p == 0 {
            return Ok(vec![0.0; p]);
        }
        let mut features = Vec::with_capacity(examples.len() * p);
        for e in examples {
            features.extend_from_slice(&e.x);
        }
        let labels: Vec<f32> = examples.iter().map(|e| e.label).collect();
        let weights: Vec<f32> = examples.iter().map(|e| e.weight).collect();
        let groups = examples.len().div_ceil(GRADIENT_WORKGROUP);
        let params = Params {
            count: to_u32(examples.len())?,
            dims: to_u32(p)?,
            clip_norm,
            groups: to_u32(groups)?,
            ..Default::default()
        };
        let scope = ErrorScope::push(&self.device);
        let theta_buffer = self.storage("theta", bytemuck::cast_slice(theta))?;
        let features = self.storage("examples", bytemuck::cast_slice(&features))?;
        let labels = self.storage("labels", bytemuck::cast_slice(&labels))?;
        let weights = self.storage("weights", bytemuck::cast_slice(&weights))?;
        let run = self.dispatch(
            &self.gradient,
            params,
            params.groups,
            &[&theta_buffer, &features, &labels, &weights],
            groups * p,
        );
        let partials = self.finish(scope, run).await?;
        // The workgroups' partial sums, added in f64 (as the CPU reference adds).
        let mut sum = vec![0f64; p];
        for row in partials.chunks_exact(p) {
            for (s, v) in sum.iter_mut().zip(row) {
                *s += f64::from(*v);
            }
        }
        Ok(sum.into_iter().map(|s| s as f32).collect())
    }

    fn lost_reason(&self) -> Option<String> {
        self.lost.lock().map_or_else(
            |poisoned| poisoned.into_inner().clone(),
            |reason| reason.clone(),
        )
    }

    fn check_alive(&self) -> Result<()> {
        match self.lost_reason() {
            Some(reason) => Err(GpuError::DeviceLost(reason)),
            None => Ok(()),
        }
    }

    /// The largest storage binding in bytes, capped so the kernels' u32 element indices cannot wrap.
    fn binding_limit(&self) -> u64 {
        self.device
            .limits()
            .max_storage_buffer_binding_size
            .min(u64::from(u32::MAX))
    }

    /// A read-only storage buffer holding `bytes` (at least 4 bytes: empty bindings are invalid).
    fn storage(&self, label: &str, bytes: &[u8]) -> Result<wgpu::Buffer> {
        let limit = self.binding_limit();
        if bytes.len() as u64 > limit {
            return Err(GpuError::TooLarge(format!(
                "{label} needs {} bytes, a binding holds at most {limit}",
                bytes.len()
            )));
        }
        let contents: &[u8] = if bytes.is_empty() { &[0; 4] } else { bytes };
        Ok(self.buffer_with(label, contents, wgpu::BufferUsages::STORAGE))
    }

    /// A buffer holding `contents`. Not `create_buffer_init`: that panics on a lost device, while
    /// `write_buffer` reports the error to the call's scope.
    fn buffer_with(&self, label: &str, contents: &[u8], usage: wgpu::BufferUsages) -> wgpu::Buffer {
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: contents.len() as u64,
            usage: usage | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.queue.write_buffer(&buffer, 0, contents);
        buffer
    }

    /// Records and submits one dispatch of `groups` workgroups whose kernel writes `outputs` f32s;
    /// returns the buffer they are copied to, with its map request made.
    fn dispatch(
        &self,
        pipeline: &wgpu::ComputePipeline,
        mut params: Params,
        groups: u32,
        inputs: &[&wgpu::Buffer],
        outputs: usize,
    ) -> Result<Readback> {
        self.check_alive()?;
        let size = (outputs * 4) as u64;
        let limit = self.binding_limit();
        if size > limit {
            return Err(GpuError::TooLarge(format!(
                "the output needs {size} bytes, a binding holds at most {limit}"
            )));
        }
        let (x, y) = grid(
            groups,
            self.device.limits().max_compute_workgroups_per_dimension,
        );
        params.groups_x = x;
        let uniform = self.buffer_with(
            "params",
            bytemuck::bytes_of(&params),
            wgpu::BufferUsages::UNIFORM,
        );
        let output = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("output"),
            size,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: uniform.as_entire_binding(),
        }];
        for (binding, buffer) in (1..).zip(inputs.iter().chain([&&output])) {
            entries.push(wgpu::BindGroupEntry {
                binding,
                resource: buffer.as_entire_binding(),
            });
        }
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(x, y, 1);
        }
        encoder.copy_buffer_to_buffer(&output, 0, &staging, 0, size);
        self.queue.submit([encoder.finish()]);

        let (sender, mapped) = oneshot::channel();
        staging
            .slice(..)
            .map_async(wgpu::MapMode::Read, move |result| {
                // The receiver is gone only if the caller dropped the future; nothing to tell then.
                let _ = sender.send(result);
            });
        Ok(Readback { staging, mapped })
    }

    /// Pops the call's error scope, waits for the mapping (natively by polling the device; on the
    /// web the browser resolves it) and copies the results out.
    async fn finish(&self, scope: ErrorScope, run: Result<Readback>) -> Result<Vec<f32>> {
        // The scope is popped even when recording failed, so scopes never pile up.
        let scoped = scope.pop().await;
        let Readback { staging, mapped } = run?;
        scoped.map_err(|e| self.lost_or(e))?;
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| self.lost_or(GpuError::Readback(e.to_string())))?;
        match mapped.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(self.lost_or(GpuError::Readback(e.to_string()))),
            Err(_) => {
                return Err(self.lost_or(GpuError::Readback("the map request was dropped".into())))
            }
        }
        let values = {
            let view = staging
                .slice(..)
                .get_mapped_range()
                .map_err(|e| GpuError::Readback(e.to_string()))?;
            // Copies, so the mapping's alignment does not matter.
            bytemuck::pod_collect_to_vec::<u8, f32>(&view)
        };
        staging.unmap();
        self.check_alive()?;
        Ok(values)
    }

    /// `DeviceLost` if the device was lost (the real cause of most failures), else `error`.
    fn lost_or(&self, error: GpuError) -> GpuError {
        // Natively the lost callback runs on a poll; on the web the browser runs it.
        #[cfg(not(target_arch = "wasm32"))]
        let _ = self.device.poll(wgpu::PollType::Poll);
        self.lost_reason().map_or(error, GpuError::DeviceLost)
    }
}

/// A submitted dispatch whose output is being mapped.
struct Readback {
    staging: wgpu::Buffer,
    mapped: oneshot::Receiver<std::result::Result<(), wgpu::BufferAsyncError>>,
}

/// Validation and out-of-memory scopes around one call, so its errors come back to it.
struct ErrorScope {
    out_of_memory: wgpu::ErrorScopeGuard,
    validation: wgpu::ErrorScopeGuard,
}

impl ErrorScope {
    fn push(device: &wgpu::Device) -> Self {
        let out_of_memory = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
        Self {
            out_of_memory,
            validation,
        }
    }

    async fn pop(self) -> Result<()> {
        let validation = self.validation.pop().await;
        let out_of_memory = self.out_of_memory.pop().await;
        if let Some(e) = out_of_memory {
            return Err(GpuError::TooLarge(e.to_string()));
        }
        match validation {
            Some(e) => Err(GpuError::Rejected(e.to_string())),
            None => Ok(()),
        }
    }
}

fn pipeline(device: &wgpu::Device, label: &str, source: &str) -> wgpu::ComputePipeline {
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(label),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    });
    device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(label),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    })
}

fn record(lost: &Mutex<Option<String>>, reason: String) {
    let mut slot = lost.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    slot.get_or_insert(reason);
}

fn to_u32(n: usize) -> Result<u32> {
    u32::try_from(n)
        .map_err(|_| GpuError::TooLarge(format!("{n} does not fit the GPU's u32 indices")))
}
