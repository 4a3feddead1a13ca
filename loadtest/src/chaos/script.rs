//! The contract between chaos callers and chaos callees: the procedures, and what a call asks its
//! callee to do, written into the call's arguments so the caller knows which answers fit.
//!
//! A call's arguments are `["chaos", caller, request, procedure, op, a, b, blob?]` (`procedure` its
//! index in [`PROCEDURES`], so a callee can tell a call that reached the wrong registration); every
//! answer a callee makes carries `["chaos", caller, request, …]` back, so a caller can tell that an answer is for
//! the call it claims to answer. `blob` is derived from `(caller, request)`, so an echo can be
//! checked byte for byte without keeping it.

use roundhouse::wire::{Payload, Value};

/// First argument of every chaos call and answer.
pub const TAG: &str = "chaos";

/// A callee's own error, when a call asks for one.
pub const REQUESTED_ERROR: &str = "chaos.error.requested";
/// A callee's answer to INTERRUPT.
pub const INTERRUPTED: &str = "chaos.error.interrupted";
/// A callee's answer to an INVOCATION it cannot read as a chaos call.
pub const BAD_CALL: &str = "chaos.error.bad_call";

/// A procedure the chaos callees serve.
pub struct Procedure {
    /// Its URI.
    pub uri: &'static str,
    /// The invocation rule it is registered with.
    pub rule: &'static str,
    /// Calls to it come in chunks (progressive call invocations); its callees all announce
    /// `progressive_call_invocations` and never answer `wamp.error.unavailable`.
    pub stream: bool,
}

/// Every procedure: one per invocation rule, and one for chunked calls.
pub const PROCEDURES: [Procedure; 6] = [
    Procedure { uri: "chaos.single", rule: "single", stream: false },
    Procedure { uri: "chaos.roundrobin", rule: "roundrobin", stream: false },
    Procedure { uri: "chaos.random", rule: "random", stream: false },
    Procedure { uri: "chaos.first", rule: "first", stream: false },
    Procedure { uri: "chaos.last", rule: "last", stream: false },
    Procedure { uri: "chaos.stream", rule: "roundrobin", stream: true },
];

/// Index of the chunked-call procedure in [`PROCEDURES`].
pub const STREAM: usize = 5;

/// What a call asks its callee to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// YIELD the call's blob back.
    Echo,
    /// Answer ERROR [`REQUESTED_ERROR`].
    Fail,
    /// Echo after this many milliseconds.
    Slow(u64),
    /// Send this many progressive YIELDs, then echo.
    Progress(u64),
    /// Never answer (the call has a timeout, or its caller cancels it).
    Hold,
    /// Chunk `index` (from 0) of `total` of a progressive invocation; the callee answers the last
    /// one with the number of chunks it got.
    Chunk {
        /// This chunk's place.
        index: u64,
        /// Chunks in the call.
        total: u64,
    },
}

impl Op {
    /// The op's name, as written in the arguments and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Op::Echo => "echo",
            Op::Fail => "fail",
            Op::Slow(_) => "slow",
            Op::Progress(_) => "progress",
            Op::Hold => "hold",
            Op::Chunk { .. } => "chunk",
        }
    }

    fn params(self) -> (u64, u64) {
        match self {
            Op::Slow(ms) => (ms, 0),
            Op::Progress(n) => (n, 0),
            Op::Chunk { index, total } => (index, total),
            _ => (0, 0),
        }
    }
}

/// One chaos call: who made it, and what it asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    /// The caller's number (unique in the run).
    pub caller: u64,
    /// The CALL's request id.
    pub request: u64,
    /// The procedure called, by its index in [`PROCEDURES`].
    pub procedure: usize,
    /// What the callee should do.
    pub op: Op,
    /// Bytes of blob the call carries (and an echo returns).
    pub blob: usize,
}

impl Ask {
    /// The CALL's arguments.
    pub fn args(&self) -> Vec<Value> {
        let (a, b) = self.op.params();
        let mut args = vec![
            Value::from(TAG),
            Value::UInt(self.caller),
            Value::UInt(self.request),
            Value::UInt(self.procedure as u64),
            Value::from(self.op.name()),
            Value::UInt(a),
            Value::UInt(b),
        ];
        if self.blob > 0 {
            args.push(Value::Bytes(blob(self.caller, self.request, self.blob)));
        }
        args
    }

    /// Reads a chaos call back from its arguments.
    pub fn parse(args: &[Value]) -> Option<Ask> {
        let [tag, caller, request, procedure, op, a, b, rest @ ..] = args else { return None };
        if tag.as_str() != Some(TAG) {
            return None;
        }
        let (caller, request, a, b) = (caller.as_u64()?, request.as_u64()?, a.as_u64()?, b.as_u64()?);
        let procedure = usize::try_from(procedure.as_u64()?).ok().filter(|p| *p < PROCEDURES.len())?;
        let op = match op.as_str()? {
            "echo" => Op::Echo,
            "fail" => Op::Fail,
            "slow" => Op::Slow(a),
            "progress" => Op::Progress(a),
            "hold" => Op::Hold,
            "chunk" if a < b => Op::Chunk { index: a, total: b },
            _ => return None,
        };
        let blob = match rest {
            [] => 0,
            [Value::Bytes(bytes)] if *bytes == self::blob(caller, request, bytes.len()) => bytes.len(),
            _ => return None,
        };
        Some(Ask { caller, request, procedure, op, blob })
    }

    /// An answer's arguments: `["chaos", caller, request, n]`, plus the blob for an echo.
    pub fn answer(&self, n: u64, with_blob: bool) -> Payload {
        let mut args = vec![Value::from(TAG), Value::UInt(self.caller), Value::UInt(self.request), Value::UInt(n)];
        if with_blob && self.blob > 0 {
            args.push(Value::Bytes(blob(self.caller, self.request, self.blob)));
        }
        Payload::args(args)
    }
}

/// What an answer's arguments say, if they are a chaos answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The caller it claims to answer.
    pub caller: u64,
    /// The request it claims to answer.
    pub request: u64,
    /// Its count (chunks received, progressive result number).
    pub n: u64,
    /// Blob bytes it carries, if they are the right ones; `None` for wrong bytes.
    pub blob: Option<usize>,
}

impl Answer {
    /// Reads an answer's arguments.
    pub fn parse(payload: &Payload) -> Result<Answer, String> {
        let (args, _) = payload.to_values().map_err(|e| format!("undecodable arguments: {e}"))?;
        let [tag, caller, request, n, rest @ ..] = &args[..] else {
            return Err(format!("arguments are not a chaos answer: {}", short(&args)));
        };
        let (Some(TAG), Some(caller), Some(request), Some(n)) =
            (tag.as_str(), caller.as_u64(), request.as_u64(), n.as_u64())
        else {
            return Err(format!("arguments are not a chaos answer: {}", short(&args)));
        };
        let blob = match rest {
            [] => Some(0),
            [Value::Bytes(bytes)] if *bytes == blob(caller, request, bytes.len()) => Some(bytes.len()),
            _ => None,
        };
        Ok(Answer { caller, request, n, blob })
    }
}

/// The blob of call `(caller, request)`: `len` bytes that differ from call to call.
pub fn blob(caller: u64, request: u64, len: usize) -> Vec<u8> {
    let seed = caller.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ request;
    (0..len).map(|i| (seed.wrapping_add(i as u64 * 31) % 251) as u8).collect()
}

/// Arguments for a message, at most about 120 characters of their debug form.
pub fn short(args: &[Value]) -> String {
    let text = format!("{args:?}");
    match text.char_indices().nth(120) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roundhouse::wire::{Dict, Message, Serializer};

    #[test]
    fn calls_and_answers_read_back_in_every_serializer() {
        let asks = [
            Ask { caller: 7, request: 1, procedure: 0, op: Op::Echo, blob: 300 },
            Ask { caller: 7, request: 2, procedure: 3, op: Op::Slow(250), blob: 0 },
            Ask { caller: 9, request: 3, procedure: STREAM, op: Op::Chunk { index: 2, total: 5 }, blob: 5 },
        ];
        for serializer in Serializer::ALL {
            for ask in asks {
                let call = Message::Call {
                    request: 1,
                    options: Dict::new(),
                    procedure: "x".into(),
                    payload: Payload::args(ask.args()),
                };
                let mut frame = Vec::new();
                serializer.try_encode(&call, &mut frame).unwrap();
                let Ok(Message::Call { payload, .. }) = serializer.decode(frame.into()) else { panic!() };
                assert_eq!(Ask::parse(&payload.to_values().unwrap().0), Some(ask), "{serializer:?}");
                let answer = Answer::parse(&ask.answer(4, true)).unwrap();
                assert_eq!(
                    (answer.caller, answer.request, answer.n, answer.blob),
                    (ask.caller, ask.request, 4, Some(ask.blob))
                );
            }
        }
    }

    #[test]
    fn foreign_arguments_are_not_chaos_calls() {
        assert_eq!(Ask::parse(&[Value::UInt(1)]), None);
        let mut args = Ask { caller: 1, request: 2, procedure: 1, op: Op::Echo, blob: 8 }.args();
        args[7] = Value::Bytes(vec![0; 8]);
        assert_eq!(Ask::parse(&args), None, "a blob that is not the call's own");
        assert!(Answer::parse(&Payload::args(vec![Value::from("x")])).is_err());
    }
}
