//! Feedback: explicit events (`recordFeedback`), implicit ones captured from elements (`observe`,
//! with [`crate::observe`]), and what was learned (`explain`, `activity`, `learningState`,
//! `resetLearning`).

use std::cell::RefCell;
use std::rc::Rc;

use feedloop_core::{FeedbackOutcome, RawFeedback};
use js_sys::{Array, Function};
use serde::Serialize;
use wasm_bindgen::prelude::*;

use crate::convert::{check_fields, string, to_js, type_name};
use crate::error::{invalid, JsResult};
use crate::observe::{Observation, Recorder};
use crate::{Inner, Ranker};

#[wasm_bindgen(js_class = WasmRanker)]
impl Ranker {
    /// Records one feedback event and learns from it at once; the next `rank` shows the change.
    /// Throws an `Error` for a malformed event or a candidate that was never ranked.
    ///
    /// ```js
    /// ranker.recordFeedback({ kind: "thumbs", candidate: "luigi", up: false });
    /// ```
    #[wasm_bindgen(js_name = recordFeedback, unchecked_return_type = "FeedbackOutcome")]
    pub fn record_feedback(
        &self,
        #[wasm_bindgen(unchecked_param_type = "FeedbackEvent")] event: JsValue,
    ) -> JsResult<JsValue> {
        let raw = raw_feedback(event)?;
        let outcome = record(&self.inner, raw)?;
        to_js(&outcome)
    }

    /// Why a ranked candidate scores what it does, and how much feedback backs it.
    #[wasm_bindgen(unchecked_return_type = "Explanation")]
    pub fn explain(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] candidate: JsValue,
    ) -> JsResult<JsValue> {
        let candidate = string(&candidate, "candidate")?;
        let explanation = self.inner.borrow().feedback.explain(&candidate)?;
        to_js(&explanation)
    }

    /// Recent feedback on this device, oldest first (local only; never uploaded).
    #[wasm_bindgen(unchecked_return_type = "Activity[]")]
    pub fn activity(&self) -> JsResult<JsValue> {
        to_js(&self.inner.borrow().feedback.state().activity)
    }

    /// What the device learned: the delta from the global head and how many examples shaped it.
    #[wasm_bindgen(js_name = learningState, unchecked_return_type = "LearningState")]
    pub fn learning_state(&self) -> JsResult<JsValue> {
        let inner = self.inner.borrow();
        let state = inner.feedback.learning_state();
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct View<'a> {
            base_version: &'a str,
            delta: &'a [f32],
            example_count: u64,
        }
        to_js(&View {
            base_version: &state.base_version,
            delta: &state.delta,
            example_count: state.example_count,
        })
    }

    /// Forgets everything learned on this device (saved by the next `save`).
    #[wasm_bindgen(js_name = resetLearning)]
    pub fn reset_learning(&self) {
        self.inner.borrow_mut().feedback.reset();
    }

    /// Records implicit feedback for `candidate` from `element` by itself: click, copy and dwell.
    /// `onRecord` receives each outcome (or an `Error`, e.g. if the candidate was forgotten).
    ///
    /// ```js
    /// ranker.observe(document.querySelector("#answer-1"), "answer-1", (outcome) => console.log(outcome));
    /// ```
    pub fn observe(
        &self,
        element: web_sys::Element,
        candidate: String,
        #[wasm_bindgen(
            js_name = onRecord,
            unchecked_param_type = "(outcome: FeedbackOutcome | Error) => void"
        )]
        on_record: Function,
    ) -> JsResult<()> {
        if candidate.is_empty() {
            return Err(invalid("observe needs a candidate id"));
        }
        self.unobserve(&element);
        let inner = Rc::downgrade(&self.inner);
        let recorder: Recorder = Rc::new(move |raw: RawFeedback| {
            let Some(inner) = inner.upgrade() else {
                return;
            };
            let value = match record(&inner, raw).and_then(|outcome| to_js(&outcome)) {
                Ok(outcome) => outcome,
                Err(e) => JsValue::from(e),
            };
            let _ = on_record.call1(&JsValue::NULL, &value);
        });
        self.observations
            .borrow_mut()
            .push(Observation::new(element, candidate, recorder));
        Ok(())
    }

    /// Removes the listeners `observe` attached to `element`; returns whether there were any.
    pub fn unobserve(&self, element: &web_sys::Element) -> bool {
        let mut observations = self.observations.borrow_mut();
        let before = observations.len();
        observations.retain(|o| o.element != *element);
        observations.len() != before
    }
}

fn record(inner: &RefCell<Inner>, raw: RawFeedback) -> JsResult<FeedbackOutcome> {
    let mut inner = inner.borrow_mut();
    let outcome = inner.feedback.record(raw, js_sys::Date::now())?;
    // A thumbs on the answer the model ranked first: the thumbs-up-rate metric of the global
    // version in use, reported (privatized) at the next sync.
    let version = inner.global_version.clone();
    if let Some(up) = outcome.thumbs_on_top {
        inner.privacy.observe_thumbs(&version, up);
        // With a declared segment, the thumbs-up rate per segment too.
        if let Some(segment) = inner.segment.clone() {
            inner.privacy.observe_segment_thumbs(&version, &segment, up);
        }
    }
    // A star rating: the CSAT metric of the version in use, likewise.
    if let Some(stars) = outcome.stars_given {
        inner.privacy.observe_stars(&version, stars);
    }
    // An "A or B" choice: whether the global head agreed (federated evaluation), likewise.
    if let Some(agreed) = outcome.global_agreed {
        inner.privacy.observe_agreement(&version, agreed);
    }
    // Every event: its kind, for the feedback-volume metric.
    inner.privacy.observe_kind(&version, outcome.kind);
    Ok(outcome)
}

fn raw_feedback(event: JsValue) -> JsResult<RawFeedback> {
    if !event.is_object() || Array::is_array(&event) {
        return Err(invalid(format!(
            "a feedback event must be an object like {{ kind: \"thumbs\", candidate: \"a\", up: true }}, got {}",
            type_name(&event)
        )));
    }
    check_fields(&event, RawFeedback::FIELDS, "feedback event")?;
    serde_wasm_bindgen::from_value(event)
        .map_err(|e| invalid(format!("invalid feedback event: {e}")))
}

/// The flag categories a user can choose (`flag(id, category)`), in display order: the core's
/// fixed list, so the widget offers exactly what `recordFeedback` accepts.
#[wasm_bindgen(js_name = flagCategories, unchecked_return_type = "FlagCategory[]")]
pub fn flag_categories() -> Array {
    feedloop_core::FlagCategory::ALL
        .iter()
        .map(|c| JsValue::from_str(c))
        .collect()
}
