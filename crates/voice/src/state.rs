//! The life of one call, as a pure state machine:
//!
//! ```text
//!  ringing ──queued──▶ queued ──offered──▶ offered ──answered──▶ connected
//!     │                  ▲                   │                      │
//!     │                  └──missed/lapsed────┘                      │
//!     └───────────── ended (from any phase; final) ◀────────────────┘
//! ```
//!
//! Two kinds of input move it: what the provider reports ([`CallEvent`]s,
//! [`CallState::apply`]) and what routing did ([`RouteStep`]s,
//! [`CallState::route`]). Each returns the [`Transition`] (with the next
//! state, which the caller stores) or why the input changes nothing
//! ([`Stale`]). Providers deliver late and out of order, so:
//!
//! - an ended call is final: nothing moves it again ([`Stale::Ended`]);
//! - a Twilio status callback whose `SequenceNumber` is not after the last
//!   one applied is ignored ([`Stale::OutOfOrder`]);
//! - an input that does not apply to the current phase (a second `answer`,
//!   `ringing` after `queued`, an offer lapsing after the agent answered)
//!   is ignored ([`Stale::WrongPhase`]).
//!
//! A caller who hangs up while queued or offered has **abandoned** the call
//! ([`Transition::abandoned`]); an agent who does not take an offered call
//! sends it back to the queue ([`Transition::missed`]).

use crate::call::{CallEvent, CallEventKind, EndCause};
use serde::{Deserialize, Serialize};

/// Where a call is. The order is the order of a normal call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The provider told us about it; not in routing yet.
    Ringing,
    /// Stored by the intake and waiting in a routing queue (the caller hears
    /// the hold).
    Queued,
    /// Offered to an agent whose phone rings.
    Offered,
    /// An agent is talking to the caller.
    Connected,
    /// Over. Final.
    Ended,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ringing => "ringing",
            Self::Queued => "queued",
            Self::Offered => "offered",
            Self::Connected => "connected",
            Self::Ended => "ended",
        }
    }
}

/// What routing did with the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteStep {
    /// The intake stored the contact and it waits in a queue.
    Queued,
    /// An agent was chosen; the provider was told to ring them.
    Offered,
    /// The agent did not answer within the ring timeout (our own timer;
    /// the provider's report is [`CallEventKind::AgentMissed`]).
    OfferLapsed,
}

impl RouteStep {
    fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Offered => "offered",
            Self::OfferLapsed => "offer_lapsed",
        }
    }
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ending {
    pub cause: EndCause,
    /// The phase it ended in.
    pub in_phase: Phase,
    /// The caller hung up while queued or offered: never offered again, and
    /// counted.
    pub abandoned: bool,
    /// The provider's duration (Twilio `CallDuration`).
    pub duration_secs: Option<u64>,
}

/// The state of one call. Build it with [`CallState::new`] when the call
/// rings; store what [`Transition::next`] gives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallState {
    phase: Phase,
    last_sequence: Option<u64>,
    offers: u32,
    answered_by: Option<String>,
    ending: Option<Ending>,
}

impl Default for CallState {
    fn default() -> Self {
        Self::new()
    }
}

/// A change an input made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: Phase,
    pub to: Phase,
    /// The state after the input: store it.
    pub next: CallState,
    /// The call ended while queued or offered.
    pub abandoned: bool,
    /// The offered agent did not take the call; it is queued again (handle
    /// the agent as after a missed offer).
    pub missed: bool,
}

/// Why an input changes nothing. It is acknowledged to the provider and
/// dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Stale {
    /// The call has ended; ended calls never move again.
    #[error("the call has ended")]
    Ended,
    /// A status callback older than one applied already.
    #[error("sequence number {got} is not after {last}")]
    OutOfOrder { last: u64, got: u64 },
    /// The input does not apply to the call's phase (a repeat, or news
    /// the call has moved past).
    #[error("{input} does not apply to a {} call", phase.as_str())]
    WrongPhase { phase: Phase, input: &'static str },
}

impl Stale {
    /// A short, bounded label for metrics.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Ended => "ended",
            Self::OutOfOrder { .. } => "out_of_order",
            Self::WrongPhase { .. } => "wrong_phase",
        }
    }
}

impl CallState {
    /// A call that just rang.
    pub fn new() -> Self {
        CallState {
            phase: Phase::Ringing,
            last_sequence: None,
            offers: 0,
            answered_by: None,
            ending: None,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The highest Twilio `SequenceNumber` applied.
    pub fn last_sequence(&self) -> Option<u64> {
        self.last_sequence
    }

    /// How many times the call was offered to an agent.
    pub fn offers(&self) -> u32 {
        self.offers
    }

    /// Who answered, when the provider said.
    pub fn answered_by(&self) -> Option<&str> {
        self.answered_by.as_deref()
    }

    /// How the call ended, once it has.
    pub fn ending(&self) -> Option<&Ending> {
        self.ending.as_ref()
    }

    /// Applies what the provider reported.
    pub fn apply(&self, event: &CallEvent) -> Result<Transition, Stale> {
        if self.phase == Phase::Ended {
            return Err(Stale::Ended);
        }
        if let (Some(last), Some(got)) = (self.last_sequence, event.sequence)
            && got <= last
        {
            return Err(Stale::OutOfOrder { last, got });
        }
        let wrong = || Stale::WrongPhase {
            phase: self.phase,
            input: event.kind.as_str(),
        };
        let mut next = self.clone();
        next.last_sequence = self.last_sequence.max(event.sequence);
        let mut missed = false;
        match &event.kind {
            // The state starts ringing; a ringing report is at best a repeat.
            CallEventKind::Ringing { .. } => return Err(wrong()),
            CallEventKind::Answered { by } => match self.phase {
                Phase::Ringing | Phase::Queued | Phase::Offered => {
                    next.phase = Phase::Connected;
                    next.answered_by = by.clone();
                }
                Phase::Connected | Phase::Ended => return Err(wrong()),
            },
            CallEventKind::AgentMissed { .. } => match self.phase {
                Phase::Offered => {
                    next.phase = Phase::Queued;
                    missed = true;
                }
                _ => return Err(wrong()),
            },
            CallEventKind::Ended {
                cause,
                duration_secs,
            } => {
                next.phase = Phase::Ended;
                next.ending = Some(Ending {
                    cause: cause.clone(),
                    in_phase: self.phase,
                    abandoned: matches!(self.phase, Phase::Queued | Phase::Offered),
                    duration_secs: *duration_secs,
                });
            }
        }
        Ok(self.transition(next, missed))
    }

    /// Applies what routing did.
    pub fn route(&self, step: RouteStep) -> Result<Transition, Stale> {
        if self.phase == Phase::Ended {
            return Err(Stale::Ended);
        }
        let mut next = self.clone();
        let mut missed = false;
        match (step, self.phase) {
            (RouteStep::Queued, Phase::Ringing) => next.phase = Phase::Queued,
            (RouteStep::Offered, Phase::Queued) => {
                next.phase = Phase::Offered;
                next.offers = self.offers.saturating_add(1);
            }
            (RouteStep::OfferLapsed, Phase::Offered) => {
                next.phase = Phase::Queued;
                missed = true;
            }
            (step, phase) => {
                return Err(Stale::WrongPhase {
                    phase,
                    input: step.as_str(),
                });
            }
        }
        Ok(self.transition(next, missed))
    }

    fn transition(&self, next: CallState, missed: bool) -> Transition {
        Transition {
            from: self.phase,
            to: next.phase,
            abandoned: next.ending.as_ref().is_some_and(|e| e.abandoned),
            missed,
            next,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::{Direction, Provider};
    use proptest::prelude::*;

    fn event(kind: CallEventKind, sequence: Option<u64>) -> CallEvent {
        CallEvent {
            provider: Provider::Twilio,
            call_id: "CA1".into(),
            kind,
            sequence,
            at: None,
        }
    }

    fn ringing() -> CallEventKind {
        CallEventKind::Ringing {
            from: "+380501234567".into(),
            to: "+15550783881".into(),
            direction: Direction::Inbound,
            caller_name: None,
            queue: None,
        }
    }

    fn answered() -> CallEventKind {
        CallEventKind::Answered {
            by: Some("sip:olena@pbx.example".into()),
        }
    }

    fn ended(cause: EndCause) -> CallEventKind {
        CallEventKind::Ended {
            cause,
            duration_secs: Some(95),
        }
    }

    fn step(state: &CallState, s: RouteStep) -> CallState {
        state.route(s).expect("applies").next
    }

    #[test]
    fn answered_call() {
        let s = CallState::new();
        let s = step(&s, RouteStep::Queued);
        let s = step(&s, RouteStep::Offered);
        let t = s.apply(&event(answered(), None)).expect("applies");
        assert_eq!((t.from, t.to), (Phase::Offered, Phase::Connected));
        assert_eq!(t.next.answered_by(), Some("sip:olena@pbx.example"));
        let t = t
            .next
            .apply(&event(ended(EndCause::Completed), Some(4)))
            .expect("applies");
        assert!(!t.abandoned);
        assert_eq!(
            t.next.ending(),
            Some(&Ending {
                cause: EndCause::Completed,
                in_phase: Phase::Connected,
                abandoned: false,
                duration_secs: Some(95),
            })
        );
        assert_eq!(t.next.last_sequence(), Some(4));
        assert_eq!(t.next.offers(), 1);
    }

    #[test]
    fn hanging_up_in_the_queue_is_abandonment() {
        for cause in [EndCause::Canceled, EndCause::Completed] {
            let queued = step(&CallState::new(), RouteStep::Queued);
            let t = queued
                .apply(&event(ended(cause.clone()), None))
                .expect("applies");
            assert!(t.abandoned, "{cause:?}");
            let offered = step(&queued, RouteStep::Offered);
            let t = offered.apply(&event(ended(cause), None)).expect("applies");
            assert!(t.abandoned);
        }
        // Before routing took it (e.g. a blocked caller we rejected) it is
        // not an abandonment.
        let t = CallState::new()
            .apply(&event(ended(EndCause::Busy), None))
            .expect("applies");
        assert!(!t.abandoned);
    }

    #[test]
    fn missed_offers_go_back_to_the_queue() {
        let offered = step(
            &step(&CallState::new(), RouteStep::Queued),
            RouteStep::Offered,
        );
        let t = offered
            .apply(&event(
                CallEventKind::AgentMissed {
                    cause: EndCause::NoAnswer,
                },
                None,
            ))
            .expect("applies");
        assert!(t.missed);
        assert_eq!(t.to, Phase::Queued);
        let again = step(&t.next, RouteStep::Offered);
        assert_eq!(again.offers(), 2);
        let t = again.route(RouteStep::OfferLapsed).expect("applies");
        assert!(t.missed);
        assert_eq!(t.to, Phase::Queued);
    }

    #[test]
    fn late_and_repeated_inputs_are_stale() {
        let s = CallState::new();
        assert_eq!(
            s.apply(&event(ringing(), None)).map(|t| t.to),
            Err(Stale::WrongPhase {
                phase: Phase::Ringing,
                input: "ringing"
            })
        );
        let s = s
            .apply(&event(ended(EndCause::Completed), Some(3)))
            .expect("applies")
            .next;
        for kind in [ringing(), answered(), ended(EndCause::Busy)] {
            assert_eq!(s.apply(&event(kind, Some(9))), Err(Stale::Ended));
        }
        assert_eq!(s.route(RouteStep::Queued), Err(Stale::Ended));

        let connected = CallState::new()
            .apply(&event(answered(), Some(2)))
            .expect("applies")
            .next;
        assert_eq!(
            connected.apply(&event(ended(EndCause::Completed), Some(1))),
            Err(Stale::OutOfOrder { last: 2, got: 1 })
        );
        assert_eq!(
            connected.apply(&event(answered(), Some(2))),
            Err(Stale::OutOfOrder { last: 2, got: 2 })
        );
        assert_eq!(
            connected.route(RouteStep::OfferLapsed).map_err(Stale::kind),
            Err("wrong_phase")
        );
        assert_eq!(
            CallState::new()
                .route(RouteStep::Offered)
                .map_err(Stale::kind),
            Err("wrong_phase")
        );
    }

    #[test]
    fn state_round_trips_through_json() {
        let s = step(&CallState::new(), RouteStep::Queued);
        let s = s
            .apply(&event(ended(EndCause::Other("forwarded".into())), Some(1)))
            .expect("applies")
            .next;
        let json = serde_json::to_string(&s).expect("serializes");
        let back: CallState = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back, s);
    }

    #[derive(Debug, Clone)]
    enum Input {
        Event(CallEventKind, Option<u64>),
        Route(RouteStep),
    }

    fn cause() -> impl Strategy<Value = EndCause> {
        prop_oneof![
            Just(EndCause::Completed),
            Just(EndCause::Busy),
            Just(EndCause::NoAnswer),
            Just(EndCause::Canceled),
            Just(EndCause::Failed),
            Just(EndCause::Rejected),
            "[a-z]{0,8}".prop_map(EndCause::Other),
        ]
    }

    fn input() -> impl Strategy<Value = Input> {
        let sequence = proptest::option::of(0u64..8);
        prop_oneof![
            sequence.clone().prop_map(|s| Input::Event(ringing(), s)),
            (proptest::option::of("[a-z]{1,4}"), sequence.clone())
                .prop_map(|(by, s)| Input::Event(CallEventKind::Answered { by }, s)),
            (cause(), sequence.clone())
                .prop_map(|(cause, s)| Input::Event(CallEventKind::AgentMissed { cause }, s)),
            (cause(), proptest::option::of(any::<u64>()), sequence).prop_map(
                |(cause, duration_secs, s)| Input::Event(
                    CallEventKind::Ended {
                        cause,
                        duration_secs
                    },
                    s
                )
            ),
            Just(Input::Route(RouteStep::Queued)),
            Just(Input::Route(RouteStep::Offered)),
            Just(Input::Route(RouteStep::OfferLapsed)),
        ]
    }

    proptest! {
        #[test]
        fn no_sequence_moves_an_ended_call_back(inputs in proptest::collection::vec(input(), 0..40)) {
            let mut state = CallState::new();
            for input in inputs {
                let before = state.clone();
                let result = match &input {
                    Input::Event(kind, sequence) => state.apply(&event(kind.clone(), *sequence)),
                    Input::Route(step) => state.route(*step),
                };
                match result {
                    Ok(t) => {
                        prop_assert_ne!(before.phase(), Phase::Ended);
                        prop_assert_eq!(t.from, before.phase());
                        prop_assert_eq!(t.to, t.next.phase());
                        // Forward only, except a missed offer going back to the queue.
                        if t.to < t.from {
                            prop_assert!(t.missed);
                            prop_assert_eq!((t.from, t.to), (Phase::Offered, Phase::Queued));
                        }
                        prop_assert_eq!(t.missed, t.from == Phase::Offered && t.to == Phase::Queued);
                        if t.abandoned {
                            prop_assert!(matches!(t.from, Phase::Queued | Phase::Offered));
                            prop_assert_eq!(t.to, Phase::Ended);
                        }
                        prop_assert_eq!(t.next.ending().is_some(), t.to == Phase::Ended);
                        prop_assert!(t.next.last_sequence() >= before.last_sequence());
                        if let (Some(last), Input::Event(_, Some(got))) = (before.last_sequence(), &input) {
                            prop_assert!(*got > last);
                        }
                        state = t.next;
                    }
                    Err(stale) => {
                        if before.phase() == Phase::Ended {
                            prop_assert_eq!(stale, Stale::Ended);
                        }
                    }
                }
            }
        }
    }
}
