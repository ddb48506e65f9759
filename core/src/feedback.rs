//! Feedback events: what a user says (thumbs, stars, "A or B", corrections, flags) or does (click,
//! dwell, copy, regenerate, skip) about a candidate. Events arrive from JS as loose objects
//! ([`RawFeedback`]); [`FeedbackEvent::validate`] turns them into typed events or an error that names
//! the problem. Nothing here learns: see `learning` and `feedback_loop`.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Events stamped further ahead of the device clock than this are rejected (clock skew allowance).
pub const MAX_CLOCK_SKEW_MS: f64 = 5.0 * 60.0 * 1000.0;

/// Every event kind, as JS spells it.
pub const KINDS: [&str; 10] = [
    "thumbs",
    "stars",
    "pairwise",
    "correction",
    "flag",
    "click",
    "dwell",
    "copy",
    "regenerate",
    "skip",
];

/// Reasons a user can flag a candidate. A fixed list: free text never leaves the device, and a
/// category is all a flag carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlagCategory {
    Wrong,
    Harmful,
    OffTopic,
}

impl FlagCategory {
    pub const ALL: [&'static str; 3] = ["wrong", "harmful", "off-topic"];

    pub fn parse(value: &str) -> Result<Self> {
        match value {
            "wrong" => Ok(Self::Wrong),
            "harmful" => Ok(Self::Harmful),
            "off-topic" => Ok(Self::OffTopic),
            other => Err(Error::InvalidInput(format!(
                "unknown flag category {other:?}; expected one of {}",
                Self::ALL.join(", ")
            ))),
        }
    }
}

/// What happened, with the candidate(s) it is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Signal {
    Thumbs {
        candidate: String,
        up: bool,
    },
    Stars {
        candidate: String,
        stars: u8,
    },
    Pairwise {
        winner: String,
        loser: String,
    },
    /// The user rewrote `candidate` as `text`: the edit is preferred over the original.
    Correction {
        candidate: String,
        text: String,
    },
    Flag {
        candidate: String,
        category: FlagCategory,
    },
    Click {
        candidate: String,
    },
    Dwell {
        candidate: String,
        ms: u32,
    },
    Copy {
        candidate: String,
    },
    /// The user asked for another answer while `candidate` was shown: a negative for it.
    Regenerate {
        candidate: String,
    },
    /// The user scrolled past `candidate` to act on a lower one: a weak negative.
    Skip {
        candidate: String,
    },
}

impl Signal {
    pub fn kind(&self) -> &'static str {
        match self {
            Signal::Thumbs { .. } => "thumbs",
            Signal::Stars { .. } => "stars",
            Signal::Pairwise { .. } => "pairwise",
            Signal::Correction { .. } => "correction",
            Signal::Flag { .. } => "flag",
            Signal::Click { .. } => "click",
            Signal::Dwell { .. } => "dwell",
            Signal::Copy { .. } => "copy",
            Signal::Regenerate { .. } => "regenerate",
            Signal::Skip { .. } => "skip",
        }
    }

    /// Explicit feedback is something the user meant to say; implicit is something they did.
    pub fn is_explicit(&self) -> bool {
        matches!(
            self,
            Signal::Thumbs { .. }
                | Signal::Stars { .. }
                | Signal::Pairwise { .. }
                | Signal::Correction { .. }
                | Signal::Flag { .. }
        )
    }

    /// The candidates the event names (one, or winner and loser).
    pub fn candidates(&self) -> Vec<&str> {
        match self {
            Signal::Pairwise { winner, loser } => vec![winner, loser],
            Signal::Thumbs { candidate, .. }
            | Signal::Stars { candidate, .. }
            | Signal::Correction { candidate, .. }
            | Signal::Flag { candidate, .. }
            | Signal::Click { candidate }
            | Signal::Dwell { candidate, .. }
            | Signal::Copy { candidate }
            | Signal::Regenerate { candidate }
            | Signal::Skip { candidate } => vec![candidate],
        }
    }
}

/// A validated event.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackEvent {
    pub signal: Signal,
    /// The context (question, query) the candidate was judged in; `None` means the context it was
    /// last ranked under.
    pub context: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: f64,
}

/// An event as JS hands it over: every field optional, so that a missing or misspelled one gets a
/// message naming it instead of a generic "invalid type".
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFeedback {
    pub kind: Option<String>,
    pub candidate: Option<String>,
    pub winner: Option<String>,
    pub loser: Option<String>,
    pub up: Option<bool>,
    pub stars: Option<f64>,
    pub text: Option<String>,
    pub category: Option<String>,
    pub ms: Option<f64>,
    pub context: Option<String>,
    pub timestamp: Option<f64>,
}

impl RawFeedback {
    /// The field names JS may use.
    pub const FIELDS: &'static [&'static str] = &[
        "kind",
        "candidate",
        "winner",
        "loser",
        "up",
        "stars",
        "text",
        "category",
        "ms",
        "context",
        "timestamp",
    ];
}

impl FeedbackEvent {
    /// Checks a raw event: known kind, required fields present, values in range, a timestamp that is
    /// not in the future. `now_ms` is the device clock; an event without a timestamp gets it.
    /// Whether the candidates exist is checked by the feedback loop, which knows them.
    pub fn validate(raw: RawFeedback, now_ms: f64) -> Result<Self> {
        let kind = raw.kind.as_deref().ok_or_else(|| {
            invalid(format!(
                "an event needs a kind: one of {}",
                KINDS.join(", ")
            ))
        })?;
        let candidate = || required(&raw.candidate, "candidate", kind);
        let signal =
            match kind {
                "thumbs" => Signal::Thumbs {
                    candidate: candidate()?,
                    up: raw.up.ok_or_else(|| missing("up", kind, "true or false"))?,
                },
                "stars" => {
                    let stars = raw.stars.ok_or_else(|| missing("stars", kind, "1 to 5"))?;
                    if !(stars.fract() == 0.0 && (1.0..=5.0).contains(&stars)) {
                        return Err(invalid(format!(
                            "a star rating must be a whole number from 1 to 5, got {stars}"
                        )));
                    }
                    Signal::Stars {
                        candidate: candidate()?,
                        stars: stars as u8,
                    }
                }
                "pairwise" => {
                    let winner = required(&raw.winner, "winner", kind)?;
                    let loser = required(&raw.loser, "loser", kind)?;
                    if winner == loser {
                        return Err(invalid(format!(
                        "a pairwise choice needs two different candidates, got {winner:?} twice"
                    )));
                    }
                    Signal::Pairwise { winner, loser }
                }
                "correction" => {
                    let text = required(&raw.text, "text", kind)?;
                    if text.trim().is_empty() {
                        return Err(invalid("a correction's text is empty".into()));
                    }
                    Signal::Correction {
                        candidate: candidate()?,
                        text,
                    }
                }
                "flag" => Signal::Flag {
                    candidate: candidate()?,
                    category: FlagCategory::parse(raw.category.as_deref().ok_or_else(|| {
                        missing("category", kind, &FlagCategory::ALL.join(", "))
                    })?)?,
                },
                "click" => Signal::Click {
                    candidate: candidate()?,
                },
                "dwell" => {
                    let ms = raw.ms.ok_or_else(|| missing("ms", kind, "milliseconds"))?;
                    if !(ms.is_finite() && ms >= 0.0) {
                        return Err(invalid(format!(
                            "dwell time must be a non-negative number of milliseconds, got {ms}"
                        )));
                    }
                    Signal::Dwell {
                        candidate: candidate()?,
                        ms: ms.min(u32::MAX as f64) as u32,
                    }
                }
                "copy" => Signal::Copy {
                    candidate: candidate()?,
                },
                "regenerate" => Signal::Regenerate {
                    candidate: candidate()?,
                },
                "skip" => Signal::Skip {
                    candidate: candidate()?,
                },
                other => {
                    return Err(invalid(format!(
                        "unknown feedback kind {other:?}; expected one of {}",
                        KINDS.join(", ")
                    )))
                }
            };
        let timestamp_ms = match raw.timestamp {
            None => now_ms,
            Some(t) if !t.is_finite() || t < 0.0 => {
                return Err(invalid(format!(
                    "timestamp must be milliseconds since 1970 (like Date.now()), got {t}"
                )))
            }
            Some(t) if t > now_ms + MAX_CLOCK_SKEW_MS => {
                return Err(invalid(format!(
                    "timestamp {t} is {:.0} s in the future; events are recorded when they happen",
                    (t - now_ms) / 1000.0
                )))
            }
            Some(t) => t,
        };
        if let Some(context) = &raw.context {
            if context.trim().is_empty() {
                return Err(invalid("context, when given, must not be empty".into()));
            }
        }
        Ok(Self {
            signal,
            context: raw.context,
            timestamp_ms,
        })
    }
}

fn invalid(message: String) -> Error {
    Error::InvalidInput(message)
}

fn missing(field: &str, kind: &str, expected: &str) -> Error {
    invalid(format!("a {kind} event needs `{field}` ({expected})"))
}

fn required(value: &Option<String>, field: &str, kind: &str) -> Result<String> {
    match value {
        Some(v) if !v.is_empty() => Ok(v.clone()),
        Some(_) => Err(invalid(format!("`{field}` of a {kind} event is empty"))),
        None => Err(missing(field, kind, "a candidate id")),
    }
}

/// How much each kind of event teaches, and how much one user may say about one candidate.
///
/// Explicit feedback outweighs implicit: clicks and dwell mostly reflect position and presentation
/// (a top answer is clicked because it is on top), so on their own they would teach that bias.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct FeedbackWeights {
    pub thumbs: f32,
    pub stars: f32,
    pub pairwise: f32,
    pub correction: f32,
    pub flag: f32,
    pub click: f32,
    pub dwell: f32,
    pub copy: f32,
    pub regenerate: f32,
    pub skip: f32,
    /// Dwell shorter than this is no signal at all.
    pub min_dwell_ms: u32,
    /// Events about one candidate that still teach; later ones are recorded but not learned from.
    pub max_events_per_candidate: u32,
}

impl Default for FeedbackWeights {
    fn default() -> Self {
        Self {
            thumbs: 1.0,
            stars: 1.0,
            pairwise: 1.0,
            correction: 1.5,
            flag: 1.5,
            click: 0.2,
            dwell: 0.2,
            copy: 0.4,
            regenerate: 0.3,
            skip: 0.1,
            min_dwell_ms: 4000,
            max_events_per_candidate: 5,
        }
    }
}

/// The largest weight any kind may have: with per-example gradient clipping at `G`, one event then
/// moves the head by at most `learning_rate · MAX_WEIGHT · G`.
pub const MAX_WEIGHT: f32 = 4.0;

impl FeedbackWeights {
    pub fn validate(&self) -> Result<()> {
        for (name, w) in self.named() {
            if !(w.is_finite() && (0.0..=MAX_WEIGHT).contains(&w)) {
                return Err(invalid(format!(
                    "weight for {name} must be between 0 and {MAX_WEIGHT}, got {w}"
                )));
            }
        }
        if self.max_events_per_candidate == 0 {
            return Err(invalid(
                "maxEventsPerCandidate must be at least 1 (use weights of 0 to ignore a kind)"
                    .into(),
            ));
        }
        Ok(())
    }

    fn named(&self) -> [(&'static str, f32); 10] {
        [
            ("thumbs", self.thumbs),
            ("stars", self.stars),
            ("pairwise", self.pairwise),
            ("correction", self.correction),
            ("flag", self.flag),
            ("click", self.click),
            ("dwell", self.dwell),
            ("copy", self.copy),
            ("regenerate", self.regenerate),
            ("skip", self.skip),
        ]
    }

    /// The weight of one event; 0 for a dwell too short to mean anything.
    pub fn weight(&self, signal: &Signal) -> f32 {
        match signal {
            Signal::Thumbs { .. } => self.thumbs,
            Signal::Stars { .. } => self.stars,
            Signal::Pairwise { .. } => self.pairwise,
            Signal::Correction { .. } => self.correction,
            Signal::Flag { .. } => self.flag,
            Signal::Click { .. } => self.click,
            Signal::Dwell { ms, .. } if *ms < self.min_dwell_ms => 0.0,
            Signal::Dwell { .. } => self.dwell,
            Signal::Copy { .. } => self.copy,
            Signal::Regenerate { .. } => self.regenerate,
            Signal::Skip { .. } => self.skip,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: f64 = 1_800_000_000_000.0;

    fn raw(kind: &str) -> RawFeedback {
        RawFeedback {
            kind: Some(kind.into()),
            candidate: Some("a".into()),
            ..Default::default()
        }
    }

    fn message(raw: RawFeedback) -> String {
        FeedbackEvent::validate(raw, NOW).unwrap_err().to_string()
    }

    #[test]
    fn rejects_malformed_events_with_messages() {
        assert!(message(raw("like")).contains("unknown feedback kind \"like\""));
        assert!(message(RawFeedback::default()).contains("needs a kind"));
        assert!(message(raw("thumbs")).contains("needs `up`"));
        for stars in [0.0, 6.0, 2.5, f64::NAN] {
            let event = RawFeedback {
                stars: Some(stars),
                ..raw("stars")
            };
            assert!(message(event).contains("1 to 5"), "stars {stars}");
        }
        let same = RawFeedback {
            winner: Some("x".into()),
            loser: Some("x".into()),
            ..raw("pairwise")
        };
        assert!(message(same).contains("two different candidates"));
        let future = RawFeedback {
            timestamp: Some(NOW + 3.6e6),
            ..raw("click")
        };
        assert!(message(future).contains("in the future"));
        let flag = RawFeedback {
            category: Some("rude".into()),
            ..raw("flag")
        };
        assert!(message(flag).contains("off-topic"));
        let empty = RawFeedback {
            candidate: Some(String::new()),
            ..raw("copy")
        };
        assert!(message(empty).contains("empty"));
    }

    #[test]
    fn accepts_every_kind() {
        let events = [
            RawFeedback {
                up: Some(false),
                ..raw("thumbs")
            },
            RawFeedback {
                stars: Some(4.0),
                ..raw("stars")
            },
            RawFeedback {
                candidate: None,
                winner: Some("a".into()),
                loser: Some("b".into()),
                ..raw("pairwise")
            },
            RawFeedback {
                text: Some("better".into()),
                ..raw("correction")
            },
            RawFeedback {
                category: Some("off-topic".into()),
                ..raw("flag")
            },
            raw("click"),
            RawFeedback {
                ms: Some(5000.0),
                ..raw("dwell")
            },
            raw("copy"),
            raw("regenerate"),
            raw("skip"),
        ];
        let kinds: Vec<&str> = events
            .into_iter()
            .map(|e| FeedbackEvent::validate(e, NOW).unwrap().signal.kind())
            .collect();
        assert_eq!(kinds, KINDS);
    }

    #[test]
    fn explicit_outweighs_implicit_by_default() {
        let w = FeedbackWeights::default();
        w.validate().unwrap();
        let min_explicit = [w.thumbs, w.stars, w.pairwise, w.correction, w.flag];
        let max_implicit = [w.click, w.dwell, w.copy, w.regenerate, w.skip];
        let lo = min_explicit.iter().cloned().fold(f32::MAX, f32::min);
        let hi = max_implicit.iter().cloned().fold(0.0, f32::max);
        assert!(lo > hi);
        let short = Signal::Dwell {
            candidate: "a".into(),
            ms: 500,
        };
        assert_eq!(w.weight(&short), 0.0);
    }
}
