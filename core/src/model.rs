//! The reward model: the contract's embedding body run by tract, the reward head run here.

use std::sync::Arc;

use serde::Serialize;
use tract_onnx::prelude::*;

use crate::contract::{ModelContract, INPUT_ATTENTION_MASK, INPUT_TOKEN_IDS, OUTPUT_EMBEDDING};
use crate::error::{inference, Error, Result};
use crate::head::{PairFeatures, RewardHead};
use crate::lexical::LexicalFeature;
use crate::tokenizer::WordPieceTokenizer;

type Plan = Arc<TypedRunnableModel>;

/// Texts per body run: larger batches are split into chunks of similar length (padding is per batch).
const BATCH_ROWS: usize = 256;

/// One ranked candidate: its position in the input and its score. Best first in a ranking.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Ranked {
    pub index: usize,
    pub score: f32,
}

/// L2-normalized embeddings of a batch of texts, with the token count each text kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    pub dimensions: usize,
    /// Row-major [texts × dimensions].
    pub values: Vec<f32>,
    /// Tokens per text after truncation at `max_tokens`.
    pub token_counts: Vec<usize>,
    /// Every text's token ids in turn (`token_counts[i]` each), which the lexical feature of a
    /// contract 2 model needs; empty when they were not kept (a catalog from before contract 2).
    pub token_ids: Vec<u32>,
}

impl Embeddings {
    pub fn len(&self) -> usize {
        self.token_counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.token_counts.is_empty()
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.dimensions..(i + 1) * self.dimensions]
    }

    /// Each text's token ids, or `None` when they were not kept.
    pub fn token_rows(&self) -> Option<Vec<&[u32]>> {
        let total: usize = self.token_counts.iter().sum();
        if self.token_ids.len() != total {
            return None;
        }
        let mut rows = Vec::with_capacity(self.token_counts.len());
        let mut start = 0;
        for &n in &self.token_counts {
            rows.push(&self.token_ids[start..start + n]);
            start += n;
        }
        Some(rows)
    }

    /// A catalog kept by the page (`embedCatalog`'s output handed back): `values` must hold
    /// `dimensions` finite numbers per entry and no entry more tokens than `max_tokens`;
    /// `token_ids`, when given, every entry's ids in turn (`token_counts` of them).
    pub fn catalog(
        dimensions: usize,
        values: Vec<f32>,
        token_counts: &[u32],
        token_ids: Option<Vec<u32>>,
        max_tokens: usize,
    ) -> Result<Self> {
        if values.len() != token_counts.len() * dimensions {
            return Err(Error::InvalidInput(format!(
                "a catalog of {} entries needs {} vector values ({dimensions} per entry), got {}",
                token_counts.len(),
                token_counts.len() * dimensions,
                values.len()
            )));
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::InvalidInput(format!(
                "catalog vector value {i} (entry {}) is not a finite number",
                i / dimensions.max(1)
            )));
        }
        if let Some(i) = token_counts.iter().position(|&n| n as usize > max_tokens) {
            return Err(Error::InvalidInput(format!(
                "catalog tokenCounts[{i}] is {}, more than the model's {max_tokens} tokens",
                token_counts[i]
            )));
        }
        let token_ids = token_ids.unwrap_or_default();
        let total: u64 = token_counts.iter().map(|&n| u64::from(n)).sum();
        if !token_ids.is_empty() && token_ids.len() as u64 != total {
            return Err(Error::InvalidInput(format!(
                "catalog tokenIds has {} ids, tokenCounts adds up to {total}",
                token_ids.len()
            )));
        }
        Ok(Self {
            dimensions,
            values,
            token_counts: token_counts.iter().map(|&n| n as usize).collect(),
            token_ids,
        })
    }
}

/// Facts about a loaded model, for display and for callers that size things by it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelInfo {
    pub contract_version: String,
    pub dimensions: usize,
    pub max_tokens: usize,
    pub vocab_size: usize,
    pub head_parameters: usize,
    /// Whether the head has the lexical term (a contract 2 model).
    pub lexical_feature: bool,
    pub metadata: Vec<(String, String)>,
}

/// A loaded feedloop model: tokenizer, embedding body (a tract plan) and reward head.
#[derive(Debug, Clone)]
pub struct RewardModel {
    tokenizer: WordPieceTokenizer,
    body: Plan,
    head: RewardHead,
    lexical: Option<LexicalFeature>,
    info: ModelInfo,
}

impl RewardModel {
    /// Loads a model from ONNX bytes, checking the contract (docs/MODEL.md) first.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.is_empty() {
            return Err(Error::MalformedModel("the model is empty (0 bytes)".into()));
        }
        let onnx = tract_onnx::onnx();
        let mut proto = onnx
            .proto_model_for_read(&mut &*bytes)
            .map_err(|e| Error::MalformedModel(format!("not an ONNX protobuf ({e:#})")))?;
        let mut contract = ModelContract::from_proto(&proto)?;
        crate::dequantize::fold_packed_int4_table(&mut proto);
        crate::dequantize::fold_constant_dequantize(&mut proto);
        let tokenizer = WordPieceTokenizer::new(
            std::mem::take(&mut contract.vocab),
            contract.tokenizer.clone(),
        )?;
        let body = plan_body(&onnx, &proto)?;
        let info = ModelInfo {
            contract_version: contract.contract_version.clone(),
            dimensions: contract.dimensions,
            max_tokens: contract.max_tokens,
            vocab_size: tokenizer.vocab_size(),
            head_parameters: contract.head.parameter_count(),
            lexical_feature: contract.lexical.is_some(),
            metadata: contract.metadata.clone(),
        };
        if let Some(lexical) = &contract.lexical {
            if lexical.vocab_size() != info.vocab_size {
                return Err(Error::Contract(format!(
                    "the lexical idf table has {} values, the vocabulary {} tokens",
                    lexical.vocab_size(),
                    info.vocab_size
                )));
            }
        }
        let model = Self {
            tokenizer,
            body,
            head: contract.head,
            lexical: contract.lexical,
            info,
        };
        // A model whose body does not produce [N, dimensions] is refused now, not at the first rank.
        let probe = model.embed(&["feedloop"])?;
        if probe.values.len() != model.info.dimensions {
            return Err(Error::Contract(format!(
                "output `{OUTPUT_EMBEDDING}` has {} values per text, metadata says {}",
                probe.values.len(),
                model.info.dimensions
            )));
        }
        Ok(model)
    }

    /// The default model shipped with feedloop (all-MiniLM-L6-v2 distilled to 64 static dimensions).
    #[cfg(feature = "bundled-model")]
    pub fn bundled() -> Result<Self> {
        Self::from_bytes(crate::BUNDLED_MODEL)
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn tokenizer(&self) -> &WordPieceTokenizer {
        &self.tokenizer
    }

    pub fn head(&self) -> &RewardHead {
        &self.head
    }

    /// Replaces the head's parameters (learning and the server publish new ones).
    pub fn set_head(&mut self, head: RewardHead) -> Result<()> {
        if head.dimensions() != self.info.dimensions {
            return Err(Error::InvalidInput(format!(
                "head has {} dimensions, the model {}",
                head.dimensions(),
                self.info.dimensions
            )));
        }
        if head.lexical.is_some() != self.lexical.is_some() {
            return Err(Error::InvalidInput(format!(
                "head has {} parameters, the model's head {}",
                head.parameter_count(),
                self.head.parameter_count()
            )));
        }
        self.head = head;
        Ok(())
    }

    /// The lexical feature of a contract 2 model; `None` for contract 1.
    pub fn lexical(&self) -> Option<&LexicalFeature> {
        self.lexical.as_ref()
    }

    /// λ of every candidate against the context's token ids, for a model with a lexical term
    /// (`Ok(None)` without one). Candidates must carry their token ids (a catalog embedded before
    /// contract 2 does not, and is refused with a message saying to embed it again).
    pub fn lexical_values(
        &self,
        context_ids: &[u32],
        candidates: &Embeddings,
    ) -> Result<Option<Vec<f32>>> {
        let Some(lexical) = &self.lexical else {
            return Ok(None);
        };
        let rows = candidates.token_rows().ok_or_else(|| {
            Error::InvalidInput(
                "this model's head has a lexical term, which needs the candidates' token ids: \
                 the catalog has none (embed it again with this model)"
                    .into(),
            )
        })?;
        let query = lexical.query(context_ids);
        Ok(Some(rows.iter().map(|r| query.value(r)).collect()))
    }

    /// The dequantized token table, row-major [vocab_size × dimensions], read from the body's plan
    /// (the constant folded at load), for runtimes that gather the rows themselves (the WebGPU path).
    /// `None` when the body holds no such constant (a model whose body is not an embedding bag).
    pub fn token_table(&self) -> Option<Vec<f32>> {
        use tract_onnx::tract_core::ops::konst::Const;
        let shape = [self.info.vocab_size, self.info.dimensions];
        self.body.model().nodes().iter().find_map(|node| {
            let table = node.op_as::<Const>()?.val();
            if table.datum_type() != f32::datum_type() || table.shape() != shape {
                return None;
            }
            let view = table.to_plain_array_view::<f32>().ok()?;
            Some(view.iter().copied().collect())
        })
    }

    /// Token ids the model sees for `text` (truncated at `max_tokens`).
    pub fn token_ids(&self, text: &str) -> Vec<u32> {
        self.tokenizer.encode_truncated(text, self.info.max_tokens)
    }

    /// Embeds texts in one batch. Texts longer than `max_tokens` tokens are cut; an empty text has
    /// the zero embedding.
    pub fn embed<S: AsRef<str>>(&self, texts: &[S]) -> Result<Embeddings> {
        let ids: Vec<Vec<u32>> = texts.iter().map(|t| self.token_ids(t.as_ref())).collect();
        self.embed_ids(&ids)
    }

    /// Embeds already-tokenized texts (each at most `max_tokens` ids, each id inside the vocabulary).
    pub fn embed_ids(&self, ids: &[Vec<u32>]) -> Result<Embeddings> {
        let rows: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        self.embed_rows(&rows)
    }

    /// [`Self::embed_ids`] for a batch given as one flat buffer of ids and the length of each text:
    /// the shape typed arrays cross the wasm boundary in with one copy instead of one per text.
    /// Global-head scores of candidates against a context, all given as token ids (no tokenizer):
    /// the work an ONNX runtime does with the same model. `candidate_ids` is every candidate's ids
    /// in turn, `candidate_lengths` how many each has.
    pub fn score_token_ids(
        &self,
        context_ids: &[u32],
        candidate_ids: &[u32],
        candidate_lengths: &[u32],
    ) -> Result<Vec<f32>> {
        let mut ids = Vec::with_capacity(context_ids.len() + candidate_ids.len());
        ids.extend_from_slice(context_ids);
        ids.extend_from_slice(candidate_ids);
        let mut lengths = Vec::with_capacity(candidate_lengths.len() + 1);
        lengths.push(context_ids.len() as u32);
        lengths.extend_from_slice(candidate_lengths);
        let embeddings = self.embed_flat(&ids, &lengths)?;
        Ok(self
            .pair_features(&embeddings)?
            .iter()
            .map(|f| self.head.score(f))
            .collect())
    }

    pub fn embed_flat(&self, ids: &[u32], lengths: &[u32]) -> Result<Embeddings> {
        let total: u64 = lengths.iter().map(|&n| u64::from(n)).sum();
        if total != ids.len() as u64 {
            return Err(Error::InvalidInput(format!(
                "the lengths add up to {total} token ids, but {} were given",
                ids.len()
            )));
        }
        let mut rows = Vec::with_capacity(lengths.len());
        let mut start = 0usize;
        for &n in lengths {
            let end = start + n as usize;
            rows.push(&ids[start..end]);
            start = end;
        }
        self.embed_rows(&rows)
    }

    fn embed_rows(&self, ids: &[&[u32]]) -> Result<Embeddings> {
        let dimensions = self.info.dimensions;
        if ids.is_empty() {
            return Ok(Embeddings {
                dimensions,
                values: Vec::new(),
                token_counts: Vec::new(),
                token_ids: Vec::new(),
            });
        }
        let vocab = self.info.vocab_size as u32;
        for (row, r) in ids.iter().enumerate() {
            if r.len() > self.info.max_tokens {
                return Err(Error::InvalidInput(format!(
                    "text {row} has {} tokens, the model takes at most {}",
                    r.len(),
                    self.info.max_tokens
                )));
            }
            if let Some(bad) = r.iter().find(|&&id| id >= vocab) {
                return Err(Error::InvalidInput(format!(
                    "text {row} has token id {bad}, outside the vocabulary of {vocab}"
                )));
            }
        }
        let mut values = vec![0f32; ids.len() * dimensions];
        if ids.len() <= BATCH_ROWS {
            self.run_batch(ids, &mut values)?;
        } else {
            // Large batches run in chunks of similar length: every row is padded to the longest in
            // its batch, so one 100,000-text batch padded to its longest text took 20 s and 2.9 GB.
            let mut order: Vec<usize> = (0..ids.len()).collect();
            order.sort_by_key(|&i| ids[i].len());
            let mut chunk_values = vec![0f32; BATCH_ROWS * dimensions];
            for chunk in order.chunks(BATCH_ROWS) {
                let rows: Vec<&[u32]> = chunk.iter().map(|&i| ids[i]).collect();
                let out = &mut chunk_values[..rows.len() * dimensions];
                self.run_batch(&rows, out)?;
                for (k, &i) in chunk.iter().enumerate() {
                    values[i * dimensions..(i + 1) * dimensions]
                        .copy_from_slice(&out[k * dimensions..(k + 1) * dimensions]);
                }
            }
        }
        Ok(Embeddings {
            dimensions,
            values,
            token_counts: ids.iter().map(|r| r.len()).collect(),
            token_ids: ids.iter().flat_map(|r| r.iter().copied()).collect(),
        })
    }

    /// Runs the body on one padded batch, writing `ids.len() × dimensions` values into `out`.
    fn run_batch(&self, ids: &[&[u32]], out: &mut [f32]) -> Result<()> {
        let dimensions = self.info.dimensions;
        // At least one column so an all-empty batch still has a valid shape; padding is masked out.
        let width = ids.iter().map(|r| r.len()).max().unwrap_or(0).max(1);
        let n = ids.len();
        let mut token_ids = vec![0i64; n * width];
        let mut mask = vec![0i64; n * width];
        for (row, r) in ids.iter().enumerate() {
            for (col, &id) in r.iter().enumerate() {
                token_ids[row * width + col] = i64::from(id);
                mask[row * width + col] = 1;
            }
        }
        let inputs = tvec!(
            Tensor::from_shape(&[n, width], &token_ids)
                .map_err(inference)?
                .into_tvalue(),
            Tensor::from_shape(&[n, width], &mask)
                .map_err(inference)?
                .into_tvalue(),
        );
        let outputs = self.body.run(inputs).map_err(inference)?;
        let output = &outputs[0];
        if output.shape() != [n, dimensions] {
            return Err(Error::Contract(format!(
                "output `{OUTPUT_EMBEDDING}` has shape {:?}, expected [{n}, {dimensions}]",
                output.shape()
            )));
        }
        let plain = output.try_as_plain_ram().map_err(inference)?;
        out.copy_from_slice(plain.as_slice::<f32>().map_err(inference)?);
        Ok(())
    }

    /// Features of each candidate against the context, in input order.
    pub fn features<S: AsRef<str>>(
        &self,
        context: &str,
        candidates: &[S],
    ) -> Result<Vec<PairFeatures>> {
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let mut texts: Vec<&str> = Vec::with_capacity(candidates.len() + 1);
        texts.push(context);
        texts.extend(candidates.iter().map(AsRef::as_ref));
        let embeddings = self.embed(&texts)?;
        self.pair_features(&embeddings)
    }

    /// Features of rows 1.. of `embeddings` against row 0 (the context).
    fn pair_features(&self, embeddings: &Embeddings) -> Result<Vec<PairFeatures>> {
        let rows = embeddings.token_rows();
        let query = match (&self.lexical, &rows) {
            (Some(lexical), Some(rows)) => Some(lexical.query(rows[0])),
            (Some(_), None) => {
                return Err(Error::InvalidInput(
                    "the lexical feature needs the texts' token ids".into(),
                ))
            }
            (None, _) => None,
        };
        Ok((1..embeddings.len())
            .map(|i| {
                let lexical = match (&query, &rows) {
                    (Some(q), Some(rows)) => Some(q.value(rows[i])),
                    _ => None,
                };
                PairFeatures::new(
                    embeddings.row(0),
                    embeddings.row(i),
                    embeddings.token_counts[i],
                    self.info.max_tokens,
                )
                .with_lexical(lexical)
            })
            .collect())
    }

    /// Scores each candidate for the context, in input order.
    pub fn score<S: AsRef<str>>(&self, context: &str, candidates: &[S]) -> Result<Vec<f32>> {
        Ok(self
            .features(context, candidates)?
            .iter()
            .map(|f| self.head.score(f))
            .collect())
    }

    /// Candidates best first. Ties keep input order, so a ranking is deterministic.
    pub fn rank<S: AsRef<str>>(&self, context: &str, candidates: &[S]) -> Result<Vec<Ranked>> {
        Ok(rank_scores(&self.score(context, candidates)?))
    }
}

/// Orders scores best first (stable; NaN, which the head cannot produce from finite inputs, last).
pub fn rank_scores(scores: &[f32]) -> Vec<Ranked> {
    let mut ranked: Vec<Ranked> = scores
        .iter()
        .enumerate()
        .map(|(index, &score)| Ranked { index, score })
        .collect();
    ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
    ranked.sort_by_key(|r| r.score.is_nan());
    ranked
}

/// Builds the tract plan for the body only: inputs `token_ids`, `attention_mask`, output
/// `embedding`, with symbolic batch and length so one plan serves every batch.
fn plan_body(onnx: &tract_onnx::Onnx, proto: &tract_onnx::pb::ModelProto) -> Result<Plan> {
    let mut model = onnx
        .model_for_proto_model(proto)
        .map_err(|e| Error::MalformedModel(format!("{e:#}")))?;
    model
        .select_inputs_by_name([INPUT_TOKEN_IDS, INPUT_ATTENTION_MASK])
        .map_err(inference)?;
    model
        .select_outputs_by_name([OUTPUT_EMBEDDING])
        .map_err(inference)?;
    let batch = model.symbols.sym("N");
    let length = model.symbols.sym("L");
    for input in 0..2 {
        model
            .set_input_fact(
                input,
                InferenceFact::dt_shape(i64::datum_type(), [batch.to_dim(), length.to_dim()]),
            )
            .map_err(inference)?;
    }
    model
        .into_typed()
        .and_then(fold_constants)
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .map_err(inference)
}

/// Folds every constant subgraph into one constant, once, at load.
///
/// tract refuses a fold whose result is larger than its inputs, and an int8 embedding table
/// dequantized to f32 is four times larger: left alone, every run would dequantize the whole
/// vocabulary (2M multiplications) before gathering a handful of rows. feedloop spends the memory
/// (V × D × 4 bytes, 7.8 MB for the default model) to make small batches cheap.
fn fold_constants(mut model: TypedModel) -> TractResult<TypedModel> {
    use tract_onnx::tract_core::ops::konst::Const;
    'fold: loop {
        for id in model.eval_order()? {
            let node = model.node(id);
            if node.inputs.is_empty() || node.op_is::<Const>() {
                continue;
            }
            let Some(inputs) = model
                .node_input_facts(id)?
                .iter()
                .map(|f| f.konst.clone().map(|t| t.into_tvalue()))
                .collect::<Option<TVec<TValue>>>()
            else {
                continue;
            };
            let Some(outputs) = node.op.eval_out_of_plan(inputs)? else {
                continue;
            };
            let name = node.name.clone();
            let mut patch = TypedModelPatch::default();
            for (slot, value) in outputs.into_iter().enumerate() {
                let wire = patch.add_const(format!("{name}.folded.{slot}"), value.into_tensor())?;
                patch.shunt_outside(&model, OutletId::new(id, slot), wire)?;
            }
            patch.apply(&mut model)?;
            continue 'fold;
        }
        break;
    }
    model.into_decluttered()
}
