//! Implicit signals, captured by listening to a candidate's element: click, copy, and dwell (how long
//! at least half of it was on screen while the page was visible, via IntersectionObserver and
//! `visibilitychange`). Dropping an [`Observation`] removes every listener.

use std::cell::Cell;
use std::rc::Rc;

use feedloop_core::RawFeedback;
use gloo_events::EventListener;
use js_sys::Array;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{Element, IntersectionObserver, IntersectionObserverEntry, IntersectionObserverInit};

/// Dwell shorter than this is not even recorded (the learner ignores dwell below its own minimum).
const MIN_RECORDED_DWELL_MS: f64 = 1000.0;

/// Records one implicit event (the ranker's `recordFeedback`).
pub type Recorder = Rc<dyn Fn(RawFeedback)>;

fn event(kind: &str, candidate: &str) -> RawFeedback {
    RawFeedback {
        kind: Some(kind.into()),
        candidate: Some(candidate.into()),
        ..RawFeedback::default()
    }
}

#[derive(Default)]
struct Dwell {
    /// When the element became visible (ms), while it is.
    since: Cell<Option<f64>>,
    /// Whether at least half of it intersects the viewport.
    intersecting: Cell<bool>,
}

impl Dwell {
    fn start(&self) {
        if self.since.get().is_none() {
            self.since.set(Some(js_sys::Date::now()));
        }
    }

    fn stop(&self, candidate: &str, record: &Recorder) {
        if let Some(since) = self.since.take() {
            let ms = js_sys::Date::now() - since;
            if ms >= MIN_RECORDED_DWELL_MS {
                record(RawFeedback {
                    ms: Some(ms),
                    ..event("dwell", candidate)
                });
            }
        }
    }
}

/// The listeners attached to one element for one candidate.
pub struct Observation {
    pub element: Element,
    _listeners: Vec<EventListener>,
    observer: Option<IntersectionObserver>,
    _on_intersection: Option<Closure<dyn FnMut(Array)>>,
}

impl Drop for Observation {
    fn drop(&mut self) {
        if let Some(observer) = &self.observer {
            observer.disconnect();
        }
    }
}

impl Observation {
    pub fn new(element: Element, candidate: String, record: Recorder) -> Self {
        let mut listeners = Vec::new();
        for kind in ["click", "copy"] {
            let (candidate, record) = (candidate.clone(), record.clone());
            listeners.push(EventListener::new(&element, kind, move |_| {
                record(event(kind, &candidate));
            }));
        }

        let dwell = Rc::new(Dwell::default());
        let document = web_sys::window().and_then(|w| w.document());
        if let Some(document) = &document {
            let (dwell, candidate, record, doc) = (
                dwell.clone(),
                candidate.clone(),
                record.clone(),
                document.clone(),
            );
            listeners.push(EventListener::new(
                document,
                "visibilitychange",
                move |_| {
                    if doc.hidden() {
                        dwell.stop(&candidate, &record);
                    } else if dwell.intersecting.get() {
                        dwell.start();
                    }
                },
            ));
        }

        // No IntersectionObserver (very old browsers, some test environments): no dwell signal.
        let on_intersection = {
            let (dwell, candidate, record) = (dwell.clone(), candidate.clone(), record.clone());
            let hidden = document.clone();
            Closure::<dyn FnMut(Array)>::new(move |entries: Array| {
                for entry in entries.iter() {
                    let Ok(entry) = entry.dyn_into::<IntersectionObserverEntry>() else {
                        continue;
                    };
                    let visible = entry.is_intersecting() && entry.intersection_ratio() >= 0.5;
                    dwell.intersecting.set(visible);
                    let page_hidden = hidden.as_ref().is_some_and(|d| d.hidden());
                    if visible && !page_hidden {
                        dwell.start();
                    } else {
                        dwell.stop(&candidate, &record);
                    }
                }
            })
        };
        let init = IntersectionObserverInit::new();
        init.set_threshold(&JsValue::from_f64(0.5));
        let observer =
            IntersectionObserver::new_with_options(on_intersection.as_ref().unchecked_ref(), &init)
                .ok();
        if let Some(observer) = &observer {
            observer.observe(&element);
        }
        Self {
            element,
            _listeners: listeners,
            observer,
            _on_intersection: Some(on_intersection),
        }
    }
}
