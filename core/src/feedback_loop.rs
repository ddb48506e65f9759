//! The feedback loop on one device: rank candidates, take feedback about them, learn from it at once,
//! explain scores, and save/restore/merge what was learned.
//!
//! Candidates are known by the ids the page gives them. Ranking remembers each candidate's features
//! (and caches embeddings by text), so feedback can name a candidate by id and a re-rank after
//! feedback costs one dot product per candidate, not a model run.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::feedback::{FeedbackEvent, FeedbackWeights, RawFeedback, Signal};
use crate::head::{PairFeatures, RewardHead};
use crate::learning::{dot, learn, Example, LearningConfig, LocalLearningState};
use crate::model::RewardModel;

/// Texts whose embeddings are kept; beyond this the cache starts over (it is only a cache).
const EMBEDDING_CACHE: usize = 4096;
/// Candidates remembered for feedback; the oldest are forgotten first.
const CANDIDATE_MEMORY: usize = 10_000;
/// Recent feedback kept for the activity panel (local only, never uploaded).
const ACTIVITY_CAPACITY: usize = 50;
/// Feedback "support" at which confidence reaches one half (see [`Explanation::confidence`]).
const CONFIDENCE_HALF: f32 = 2.0;

/// A candidate to rank: the page's id for it and its text.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub id: &'a str,
    pub text: &'a str,
}

/// Ids for candidates given as plain strings: a text is its own id, and a text repeated in one
/// list gets `text#2`, `text#3`, … in input order (so feedback can name each copy).
#[derive(Debug, Default)]
pub struct CandidateIds {
    seen: std::collections::HashMap<String, usize>,
}

impl CandidateIds {
    /// The id of the next plain-string candidate with this text.
    pub fn id_for(&mut self, text: &str) -> String {
        let n = self.seen.entry(text.to_string()).or_default();
        *n += 1;
        if *n == 1 {
            text.to_string()
        } else {
            format!("{text}#{n}")
        }
    }
}

/// One ranked candidate, best first in a ranking.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RankedCandidate {
    pub id: String,
    /// Position in the input.
    pub index: usize,
    pub score: f32,
}

#[derive(Debug)]
struct Embedded {
    vector: Vec<f32>,
    /// Token ids after truncation (their count is ℓ's n; a contract 2 model's λ reads them).
    ids: Vec<u32>,
}

#[derive(Debug, Clone)]
struct CandidateRecord {
    text: String,
    context: Arc<str>,
    /// φ against `context`, in head-parameter order.
    features: Vec<f32>,
    /// Whether the model ranked it first in its last ranking (for the thumbs-up-rate metric).
    ranked_first: bool,
}

/// What recording one event did.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FeedbackOutcome {
    pub kind: &'static str,
    /// Whether the personal head learned from it.
    pub learned: bool,
    /// Why it did not, if it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The (first named) candidate's personal score before and after.
    pub score_before: f32,
    pub score_after: f32,
    /// A thumbs verdict on the candidate the model last ranked first: the observation of the
    /// thumbs-up-rate metric (`DevicePrivacy::observe_thumbs`). Stays on the device.
    #[serde(skip)]
    pub thumbs_on_top: Option<bool>,
    /// A star rating (1 to 5): the observation of the CSAT metric
    /// (`DevicePrivacy::observe_stars`). Stays on the device.
    #[serde(skip)]
    pub stars_given: Option<u8>,
    /// An "A or B" choice: whether the global head ranked the chosen one higher (the federated
    /// evaluation metric, `DevicePrivacy::observe_agreement`). Stays on the device.
    #[serde(skip)]
    pub global_agreed: Option<bool>,
}

/// One entry of the local activity log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Activity {
    pub id: u64,
    pub timestamp: f64,
    pub kind: String,
    pub candidates: Vec<String>,
    pub weight: f32,
    pub learned: bool,
    pub score_before: f32,
    pub score_after: f32,
}

/// The parts of a candidate's personal score and how much feedback backs it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    pub candidate: String,
    pub context: String,
    /// relevance + global_preference + personal_adjustment (up to float rounding).
    pub score: f32,
    /// The global head's cosine weight × cos(context, candidate), plus (a contract 2 model) its
    /// lexical weight × λ, the context's words found in the candidate: relevance to the context.
    pub relevance: f32,
    /// The rest of the global head: what the shipped (later: federated) model prefers.
    pub global_preference: f32,
    /// δ · φ: what this device's feedback changed.
    pub personal_adjustment: f32,
    /// support / (support + 2), in [0, 1): 0 with no feedback, ½ at two full-weight events.
    pub confidence: f32,
    /// Weighted feedback events about this candidate that were learned from.
    pub direct_feedback: f32,
    /// Examples the personal head has learned from in all.
    pub learned_examples: u64,
}

/// Everything learned on this device, saved by the page between visits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonalState {
    pub learning: LocalLearningState,
    /// Recent examples, replayed during learning.
    pub replay: VecDeque<Example>,
    /// Learned events per candidate id (for the per-candidate cap).
    pub events_per_candidate: BTreeMap<String, u32>,
    /// Weighted learned feedback per candidate id (for confidence).
    pub support: BTreeMap<String, f32>,
    pub activity: VecDeque<Activity>,
    /// Bumped by every save, so a tab can tell another tab wrote in between.
    pub revision: u64,
}

/// Magic and version of [`PersonalState::to_bytes`].
const STATE_MAGIC: &[u8; 4] = b"FLS1";

impl PersonalState {
    pub fn new(base_version: &str, parameter_count: usize) -> Self {
        Self {
            learning: LocalLearningState::new(base_version, parameter_count),
            replay: VecDeque::new(),
            events_per_candidate: BTreeMap::new(),
            support: BTreeMap::new(),
            activity: VecDeque::new(),
            revision: 0,
        }
    }

    /// A compact, versioned binary encoding (postcard) for storage.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = STATE_MAGIC.to_vec();
        out.extend(postcard::to_allocvec(self).expect("PersonalState always serializes"));
        out
    }

    /// Decodes [`PersonalState::to_bytes`], checking it fits a head of `parameter_count`.
    pub fn from_bytes(bytes: &[u8], parameter_count: usize) -> Result<Self> {
        let body = bytes.strip_prefix(STATE_MAGIC).ok_or_else(|| {
            Error::InvalidInput("saved state is not a feedloop state (bad header)".into())
        })?;
        let state: Self = postcard::from_bytes(body)
            .map_err(|e| Error::InvalidInput(format!("saved state is corrupt: {e}")))?;
        state.learning.check(parameter_count)?;
        if let Some(bad) = state.replay.iter().find(|e| {
            e.x.len() != parameter_count
                || !e.x.iter().all(|v| v.is_finite())
                || !(0.0..=1.0).contains(&e.label)
        }) {
            return Err(Error::InvalidInput(format!(
                "saved state has a malformed example (id {})",
                bad.id
            )));
        }
        Ok(state)
    }

    /// Three-way merge for two tabs: `stored` is what another tab saved, `base` what this tab last
    /// loaded or saved, `mine` this tab's state now. Both tabs' learning survives: the delta and the
    /// counters add this tab's increments since `base` onto `stored`; replay and activity are the
    /// union by id. (SGD increments are additive, so this is the state both tabs' steps would give,
    /// up to the order of steps.)
    pub fn merge(stored: &Self, base: &Self, mine: &Self) -> Self {
        let mut merged = stored.clone();
        for ((m, b), s) in mine
            .learning
            .delta
            .iter()
            .zip(&base.learning.delta)
            .zip(merged.learning.delta.iter_mut())
        {
            *s += m - b;
        }
        merged.learning.example_count += mine
            .learning
            .example_count
            .saturating_sub(base.learning.example_count);
        for (id, count) in &mine.events_per_candidate {
            let before = base.events_per_candidate.get(id).copied().unwrap_or(0);
            *merged.events_per_candidate.entry(id.clone()).or_default() +=
                count.saturating_sub(before);
        }
        for (id, support) in &mine.support {
            let before = base.support.get(id).copied().unwrap_or(0.0);
            *merged.support.entry(id.clone()).or_default() += (support - before).max(0.0);
        }
        let known: std::collections::HashSet<u64> = merged.replay.iter().map(|e| e.id).collect();
        merged.replay.extend(
            mine.replay
                .iter()
                .filter(|e| !known.contains(&e.id))
                .cloned(),
        );
        let known: std::collections::HashSet<u64> = merged.activity.iter().map(|a| a.id).collect();
        merged.activity.extend(
            mine.activity
                .iter()
                .filter(|a| !known.contains(&a.id))
                .cloned(),
        );
        merged
            .activity
            .make_contiguous()
            .sort_by(|a, b| a.timestamp.total_cmp(&b.timestamp));
        while merged.activity.len() > ACTIVITY_CAPACITY {
            merged.activity.pop_front();
        }
        merged.revision = stored.revision.max(mine.revision);
        merged
    }

    /// What a save writes: `mine` over what storage holds (`stored`: `None` when nothing is stored
    /// or the record is unreadable), merged with another tab's save when storage moved on since
    /// `base`; the revision is bumped.
    pub fn to_write(stored: Option<&Self>, base: &Self, mine: &Self) -> Self {
        let mut written = match stored {
            Some(stored) if stored.revision != base.revision => Self::merge(stored, base, mine),
            Some(stored) => Self {
                revision: stored.revision,
                ..mine.clone()
            },
            None => mine.clone(),
        };
        written.revision += 1;
        written
    }

    /// The state to continue with after a save of `mine` wrote `written`, while this tab went on
    /// to `current` (feedback recorded while the save was in flight is kept).
    pub fn after_save(written: &Self, mine: &Self, current: &Self) -> Self {
        let mut adopted = if current == mine {
            written.clone()
        } else {
            Self::merge(written, mine, current)
        };
        adopted.revision = written.revision;
        adopted
    }
}

/// The on-device feedback loop: a model, the candidates it ranked, and what it learned.
#[derive(Debug)]
pub struct FeedbackLoop {
    model: RewardModel,
    global: Vec<f32>,
    weights: FeedbackWeights,
    config: LearningConfig,
    state: PersonalState,
    /// Distinguishes this instance's example ids from another tab's.
    instance: u64,
    sequence: u64,
    embeddings: HashMap<String, Arc<Embedded>>,
    candidates: HashMap<String, CandidateRecord>,
    candidate_order: VecDeque<String>,
}

impl FeedbackLoop {
    /// `instance` should differ between tabs (a random number); it only keeps example ids apart.
    pub fn new(
        model: RewardModel,
        weights: FeedbackWeights,
        config: LearningConfig,
        instance: u64,
    ) -> Result<Self> {
        weights.validate()?;
        config.validate()?;
        let global = model.head().to_vector();
        let state = PersonalState::new("bundled", global.len());
        Ok(Self {
            model,
            global,
            weights,
            config,
            state,
            instance,
            sequence: 0,
            embeddings: HashMap::new(),
            candidates: HashMap::new(),
            candidate_order: VecDeque::new(),
        })
    }

    pub fn model(&self) -> &RewardModel {
        &self.model
    }

    pub fn state(&self) -> &PersonalState {
        &self.state
    }

    pub fn learning_state(&self) -> &LocalLearningState {
        &self.state.learning
    }

    /// Replaces what was learned (e.g. with a saved or merged state); checked against the head.
    pub fn set_state(&mut self, mut state: PersonalState) -> Result<()> {
        state.learning.check(self.global.len())?;
        while state.replay.len() > self.config.replay_capacity as usize {
            state.replay.pop_front();
        }
        self.state = state;
        Ok(())
    }

    /// The global head (what the personal delta is added to) and its version.
    pub fn global(&self) -> (&str, &[f32]) {
        (&self.state.learning.base_version, &self.global)
    }

    /// The personal head (global + what this device learned): what [`FeedbackLoop::rank`] scores
    /// with, as a [`RewardHead`] for batch scorers (the GPU path) that take one.
    pub fn personal_head(&self) -> RewardHead {
        let theta = self.state.learning.personal_parameters(&self.global);
        RewardHead::from_vector(self.model.head().dimensions(), &theta)
            .expect("the personal parameters have the head's length (checked by set_state)")
    }

    /// Adopts a new global head (a federated model version) and rebases on it: the personal head
    /// becomes `head + delta`, so what this device learned keeps applying on top of what everyone
    /// learned. Embeddings and remembered candidates stay valid (only the head changes).
    pub fn set_global(&mut self, version: &str, head: &[f32]) -> Result<()> {
        if version.is_empty() {
            return Err(Error::InvalidInput(
                "a model version must not be empty".into(),
            ));
        }
        let parsed = RewardHead::from_vector(self.model.head().dimensions(), head)?;
        self.model.set_head(parsed)?;
        self.global = head.to_vec();
        self.state.learning.base_version = version.to_string();
        Ok(())
    }

    /// Forgets everything learned on this device (the model and candidates stay).
    pub fn reset(&mut self) {
        let revision = self.state.revision;
        self.state = PersonalState::new(&self.state.learning.base_version, self.global.len());
        self.state.revision = revision;
    }

    /// Candidates best first under the personal head. Ids must be unique.
    pub fn rank(
        &mut self,
        context: &str,
        candidates: &[Candidate],
    ) -> Result<Vec<RankedCandidate>> {
        let mut seen = std::collections::HashSet::with_capacity(candidates.len());
        for c in candidates {
            if !seen.insert(c.id) {
                return Err(Error::InvalidInput(format!(
                    "candidate id {:?} appears twice; ids must be unique",
                    c.id
                )));
            }
        }
        let context: Arc<str> = Arc::from(context);
        let texts: Vec<&str> = candidates.iter().map(|c| c.text).collect();
        let features = self.features(&context, &texts)?;
        let theta = self.state.learning.personal_parameters(&self.global);
        let scores: Vec<f32> = features.iter().map(|x| dot(&theta, x)).collect();
        let ranked: Vec<RankedCandidate> = crate::model::rank_scores(&scores)
            .into_iter()
            .map(|r| RankedCandidate {
                id: candidates[r.index].id.to_string(),
                index: r.index,
                score: r.score,
            })
            .collect();
        let first = ranked.first().map(|r| r.id.clone());
        for (c, x) in candidates.iter().zip(features) {
            let ranked_first = first.as_deref() == Some(c.id);
            self.remember(c.id, c.text, context.clone(), x, ranked_first);
        }
        Ok(ranked)
    }

    /// Validates and records one event, and learns from it at once. An event about a candidate that
    /// was never ranked (or was forgotten) is an error, as is any malformed event.
    pub fn record(&mut self, raw: RawFeedback, now_ms: f64) -> Result<FeedbackOutcome> {
        let event = FeedbackEvent::validate(raw, now_ms)?;
        let named = event.signal.candidates();
        for id in &named {
            if !self.candidates.contains_key(*id) {
                return Err(Error::InvalidInput(format!(
                    "unknown candidate {id:?}: rank it before recording feedback about it"
                )));
            }
        }
        let primary = named[0].to_string();
        let examples = self.examples(&event)?;
        let weight = self.weights.weight(&event.signal);
        let score_before = self.personal_score(&primary);

        let cap = self.weights.max_events_per_candidate;
        let capped = named.iter().any(|id| {
            self.state
                .events_per_candidate
                .get(*id)
                .copied()
                .unwrap_or(0)
                >= cap
        });
        let reason = if weight == 0.0 {
            Some(match event.signal {
                Signal::Dwell { .. } => format!(
                    "dwell shorter than {} ms is not a signal",
                    self.weights.min_dwell_ms
                ),
                _ => format!("{} events have weight 0", event.signal.kind()),
            })
        } else if capped {
            Some(format!(
                "already learned {cap} events about this candidate (maxEventsPerCandidate)"
            ))
        } else {
            None
        };

        // Federated evaluation: whether the global head (not this device's personal one) already
        // preferred what the user chose, judged before anything is learned from it.
        let global_agreed = match &event.signal {
            Signal::Pairwise { .. } => examples.first().map(|(x, _)| dot(&self.global, x) > 0.0),
            _ => None,
        };
        let mut learned = false;
        if reason.is_none() {
            for x in examples {
                let (x, label) = x;
                let example = Example {
                    id: self.next_id(),
                    x,
                    label,
                    weight,
                };
                self.state.replay.push_back(example.clone());
                while self.state.replay.len() > self.config.replay_capacity as usize {
                    self.state.replay.pop_front();
                }
                let replay = self.state.replay.make_contiguous();
                learned |= learn(
                    &mut self.state.learning,
                    &self.global,
                    &example,
                    replay,
                    &self.config,
                );
            }
            if learned {
                for id in &named {
                    *self
                        .state
                        .events_per_candidate
                        .entry(id.to_string())
                        .or_default() += 1;
                    *self.state.support.entry(id.to_string()).or_default() += weight;
                }
            }
        }
        let score_after = self.personal_score(&primary);
        let thumbs_on_top = match &event.signal {
            Signal::Thumbs { candidate, up } => self
                .candidates
                .get(candidate)
                .filter(|c| c.ranked_first)
                .map(|_| *up),
            _ => None,
        };
        let stars_given = match &event.signal {
            Signal::Stars { stars, .. } => Some(*stars),
            _ => None,
        };
        let id = self.next_id();
        self.state.activity.push_back(Activity {
            id,
            timestamp: event.timestamp_ms,
            kind: event.signal.kind().to_string(),
            candidates: named.iter().map(|s| s.to_string()).collect(),
            weight,
            learned,
            score_before,
            score_after,
        });
        while self.state.activity.len() > ACTIVITY_CAPACITY {
            self.state.activity.pop_front();
        }
        Ok(FeedbackOutcome {
            kind: event.signal.kind(),
            learned,
            reason: if learned || reason.is_some() {
                reason
            } else {
                Some("the gradient was not finite".into())
            },
            score_before,
            score_after,
            thumbs_on_top,
            stars_given,
            global_agreed,
        })
    }

    /// The parts of a ranked candidate's score (in the context it was last ranked under).
    pub fn explain(&self, candidate: &str) -> Result<Explanation> {
        let record = self.candidates.get(candidate).ok_or_else(|| {
            Error::InvalidInput(format!(
                "unknown candidate {candidate:?}: rank it before asking why"
            ))
        })?;
        let x = &record.features;
        let mut relevance = self.global[0] * x[0];
        if self.model.lexical().is_some() {
            // φ ends [..., ℓ(n), λ, 1]
            let i = x.len() - 2;
            relevance += self.global[i] * x[i];
        }
        let global_score = dot(&self.global, x);
        let personal_adjustment = dot(&self.state.learning.delta, x);
        let direct = self.state.support.get(candidate).copied().unwrap_or(0.0);
        // Feedback about other candidates also shaped the personal head, but says less about this
        // one: it counts a tenth.
        let support = direct + 0.1 * self.state.learning.example_count as f32;
        Ok(Explanation {
            candidate: candidate.to_string(),
            context: record.context.to_string(),
            score: global_score + personal_adjustment,
            relevance,
            global_preference: global_score - relevance,
            personal_adjustment,
            confidence: support / (support + CONFIDENCE_HALF),
            direct_feedback: direct,
            learned_examples: self.state.learning.example_count,
        })
    }

    /// The personal score of a remembered candidate.
    fn personal_score(&self, id: &str) -> f32 {
        let x = &self.candidates[id].features;
        dot(&self.global, x) + dot(&self.state.learning.delta, x)
    }

    fn next_id(&mut self) -> u64 {
        self.sequence += 1;
        // 53 bits, so JS numbers hold ids exactly.
        (self.instance ^ self.sequence.wrapping_mul(0x9E37_79B9_7F4A_7C15)) & ((1 << 53) - 1)
    }

    /// (x, label) pairs for an event (see the `learning` module for the losses).
    fn examples(&mut self, event: &FeedbackEvent) -> Result<Vec<(Vec<f32>, f32)>> {
        let features = |this: &mut Self, id: &str| -> Result<Vec<f32>> {
            let record = &this.candidates[id];
            match &event.context {
                Some(c) if **c != *record.context => {
                    let (context, text) = (Arc::from(c.as_str()), record.text.clone());
                    Ok(this.features(&context, &[&text])?.remove(0))
                }
                _ => Ok(record.features.clone()),
            }
        };
        let pair = |better: Vec<f32>, worse: Vec<f32>| {
            let x = better.iter().zip(&worse).map(|(b, w)| b - w).collect();
            vec![(x, 1.0)]
        };
        Ok(match &event.signal {
            Signal::Pairwise { winner, loser } => {
                pair(features(self, winner)?, features(self, loser)?)
            }
            Signal::Correction { candidate, text } => {
                let original = features(self, candidate)?;
                let context = match &event.context {
                    Some(c) => Arc::from(c.as_str()),
                    None => self.candidates[candidate.as_str()].context.clone(),
                };
                let edit = self.features(&context, &[text.as_str()])?.remove(0);
                pair(edit, original)
            }
            Signal::Thumbs { candidate, up } => {
                vec![(features(self, candidate)?, if *up { 1.0 } else { 0.0 })]
            }
            Signal::Stars { candidate, stars } => {
                vec![(features(self, candidate)?, f32::from(stars - 1) / 4.0)]
            }
            Signal::Click { candidate }
            | Signal::Dwell { candidate, .. }
            | Signal::Copy { candidate } => vec![(features(self, candidate)?, 1.0)],
            Signal::Flag { candidate, .. }
            | Signal::Regenerate { candidate }
            | Signal::Skip { candidate } => vec![(features(self, candidate)?, 0.0)],
        })
    }

    /// φ for each text against `context`, embedding only texts not in the cache.
    fn features(&mut self, context: &str, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let wanted: Vec<&str> = std::iter::once(context)
            .chain(texts.iter().copied())
            .collect();
        let mut found: HashMap<&str, Arc<Embedded>> = HashMap::with_capacity(wanted.len());
        let mut missing: Vec<&str> = Vec::new();
        for text in &wanted {
            match self.embeddings.get(*text) {
                Some(e) => {
                    found.insert(text, e.clone());
                }
                None if !missing.contains(text) => missing.push(text),
                None => {}
            }
        }
        if !missing.is_empty() {
            let embedded = self.model.embed(&missing)?;
            let rows = embedded
                .token_rows()
                .ok_or_else(|| Error::Inference("the embeddings lack their token ids".into()))?;
            // Held in `found` for this call, so starting the cache over loses nothing needed now.
            if self.embeddings.len() + missing.len() > EMBEDDING_CACHE {
                self.embeddings.clear();
            }
            for (i, text) in missing.iter().enumerate() {
                let e = Arc::new(Embedded {
                    vector: embedded.row(i).to_vec(),
                    ids: rows[i].to_vec(),
                });
                self.embeddings.insert(text.to_string(), e.clone());
                found.insert(text, e);
            }
        }
        let max_tokens = self.model.info().max_tokens;
        let c = &found[context];
        let lexical = self.model.lexical().map(|l| l.query(&c.ids));
        Ok(texts
            .iter()
            .map(|t| {
                let r = &found[*t];
                PairFeatures::new(&c.vector, &r.vector, r.ids.len(), max_tokens)
                    .with_lexical(lexical.as_ref().map(|q| q.value(&r.ids)))
                    .to_vector()
            })
            .collect())
    }

    fn remember(
        &mut self,
        id: &str,
        text: &str,
        context: Arc<str>,
        features: Vec<f32>,
        ranked_first: bool,
    ) {
        let record = CandidateRecord {
            text: text.to_string(),
            context,
            features,
            ranked_first,
        };
        if self.candidates.insert(id.to_string(), record).is_none() {
            self.candidate_order.push_back(id.to_string());
            while self.candidate_order.len() > CANDIDATE_MEMORY {
                if let Some(old) = self.candidate_order.pop_front() {
                    self.candidates.remove(&old);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_plain_candidates_get_numbered_ids() {
        let mut ids = CandidateIds::default();
        let got: Vec<String> = ["a", "b", "a", "a", "a#2"]
            .iter()
            .map(|t| ids.id_for(t))
            .collect();
        assert_eq!(got, ["a", "b", "a#2", "a#3", "a#2"]);
    }

    fn state(delta: f32, revision: u64) -> PersonalState {
        let mut s = PersonalState {
            learning: LocalLearningState::new("1", 1),
            replay: VecDeque::new(),
            events_per_candidate: BTreeMap::new(),
            support: BTreeMap::new(),
            activity: VecDeque::new(),
            revision,
        };
        s.learning.delta[0] = delta;
        s
    }

    #[test]
    fn a_save_merges_what_another_tab_stored_and_bumps_the_revision() {
        let base = state(0.0, 3);
        let mine = state(0.5, 3);
        // Nothing stored (or unreadable): mine, one revision later.
        assert_eq!(PersonalState::to_write(None, &base, &mine), state(0.5, 4));
        // Stored is still the base: mine over it.
        assert_eq!(
            PersonalState::to_write(Some(&base), &base, &mine),
            state(0.5, 4)
        );
        // Another tab saved +0.25 meanwhile: both increments survive.
        let theirs = state(0.25, 4);
        assert_eq!(
            PersonalState::to_write(Some(&theirs), &base, &mine),
            state(0.75, 5)
        );
    }

    #[test]
    fn feedback_during_a_save_is_kept() {
        let mine = state(0.5, 3);
        let written = state(0.75, 5);
        assert_eq!(PersonalState::after_save(&written, &mine, &mine), written);
        let current = state(0.625, 3);
        assert_eq!(
            PersonalState::after_save(&written, &mine, &current),
            state(0.875, 5)
        );
    }
}
