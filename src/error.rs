//! Every error and close reason the router sends, each variant with its URI from the WAMP spec.

use std::fmt;

use crate::wire::{Message, MessageType, Payload, Value};

/// An error URI the router puts in ERROR, ABORT or GOODBYE messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WampError {
    /// The peer broke the protocol; the session is aborted.
    ProtocolViolation,
    /// HELLO named a realm this router does not serve.
    NoSuchRealm,
    /// HELLO offered no authentication method the realm accepts for the client.
    NoMatchingAuthMethod,
    /// HELLO named an authid (or cryptosign key) the realm has no principal for.
    NoSuchPrincipal,
    /// AUTHENTICATE carried a wrong ticket or signature.
    AuthenticationDenied,
    /// Authentication could not be carried out (not the client's credentials' fault).
    AuthenticationFailed,
    /// A URI failed the syntax check, or used the reserved `wamp.` namespace.
    InvalidUri,
    /// An option had a value the router does not accept.
    InvalidArgument,
    /// CALL to a procedure nobody registered.
    NoSuchProcedure,
    /// REGISTER of a procedure registered with the `single` rule.
    ProcedureAlreadyExists,
    /// REGISTER of a shared procedure with a different invocation rule.
    ProcedureExistsWithDifferentInvocationPolicy,
    /// UNREGISTER of a registration the session is not a member of.
    NoSuchRegistration,
    /// A meta API call named a session that is not in the realm.
    NoSuchSession,
    /// UNSUBSCRIBE of a subscription the session does not hold.
    NoSuchSubscription,
    /// The call ended because its callee went away, or its caller canceled it.
    Canceled,
    /// The call ran past its `timeout`.
    Timeout,
    /// A callee answers this when it cannot take the call now (call reroute).
    Unavailable,
    /// Every member of a registration answered `unavailable`.
    NoAvailableCallee,
    /// The realm does not allow `disclose_me`.
    OptionDisallowedDiscloseMe,
    /// The session may not do this.
    NotAuthorized,
    /// The peer asked for something this router does not implement.
    FeatureNotSupported,
    /// A message was larger than the receiving peer accepts.
    PayloadSizeExceeded,
    /// The router could not reach what it needs to answer (a cluster node cut off from its
    /// registry); nothing was changed.
    NetworkFailure,
    /// Close reason: the router is shutting down.
    SystemShutdown,
    /// Close reason: the session is being closed (e.g. a stuck peer).
    CloseRealm,
    /// Close reason answering a peer's GOODBYE.
    GoodbyeAndOut,
}

impl WampError {
    /// The URI on the wire.
    pub const fn uri(self) -> &'static str {
        match self {
            WampError::ProtocolViolation => "wamp.error.protocol_violation",
            WampError::NoSuchRealm => "wamp.error.no_such_realm",
            WampError::NoMatchingAuthMethod => "wamp.error.no_matching_auth_method",
            WampError::NoSuchPrincipal => "wamp.error.no_such_principal",
            WampError::AuthenticationDenied => "wamp.error.authentication_denied",
            WampError::AuthenticationFailed => "wamp.error.authentication_failed",
            WampError::InvalidUri => "wamp.error.invalid_uri",
            WampError::InvalidArgument => "wamp.error.invalid_argument",
            WampError::NoSuchProcedure => "wamp.error.no_such_procedure",
            WampError::ProcedureAlreadyExists => "wamp.error.procedure_already_exists",
            WampError::ProcedureExistsWithDifferentInvocationPolicy => {
                "wamp.error.procedure_exists_with_different_invocation_policy"
            }
            WampError::NoSuchRegistration => "wamp.error.no_such_registration",
            WampError::NoSuchSubscription => "wamp.error.no_such_subscription",
            WampError::NoSuchSession => "wamp.error.no_such_session",
            WampError::Canceled => "wamp.error.canceled",
            WampError::Timeout => "wamp.error.timeout",
            WampError::Unavailable => "wamp.error.unavailable",
            WampError::NoAvailableCallee => "wamp.error.no_available_callee",
            WampError::OptionDisallowedDiscloseMe => "wamp.error.option_disallowed.disclose_me",
            WampError::NotAuthorized => "wamp.error.not_authorized",
            WampError::FeatureNotSupported => "wamp.error.feature_not_supported",
            WampError::PayloadSizeExceeded => "wamp.error.payload_size_exceeded",
            WampError::NetworkFailure => "wamp.error.network_failure",
            WampError::SystemShutdown => "wamp.close.system_shutdown",
            WampError::CloseRealm => "wamp.close.close_realm",
            WampError::GoodbyeAndOut => "wamp.close.goodbye_and_out",
        }
    }
}

impl WampError {
    /// Every variant, in declaration order.
    const ALL: [WampError; 26] = [
        WampError::ProtocolViolation,
        WampError::NoSuchRealm,
        WampError::NoMatchingAuthMethod,
        WampError::NoSuchPrincipal,
        WampError::AuthenticationDenied,
        WampError::AuthenticationFailed,
        WampError::InvalidUri,
        WampError::InvalidArgument,
        WampError::NoSuchProcedure,
        WampError::ProcedureAlreadyExists,
        WampError::ProcedureExistsWithDifferentInvocationPolicy,
        WampError::NoSuchRegistration,
        WampError::NoSuchSubscription,
        WampError::NoSuchSession,
        WampError::Canceled,
        WampError::Timeout,
        WampError::Unavailable,
        WampError::NoAvailableCallee,
        WampError::OptionDisallowedDiscloseMe,
        WampError::NotAuthorized,
        WampError::FeatureNotSupported,
        WampError::PayloadSizeExceeded,
        WampError::NetworkFailure,
        WampError::SystemShutdown,
        WampError::CloseRealm,
        WampError::GoodbyeAndOut,
    ];

    /// The variant whose URI is `uri` (what another cluster node answered, for instance).
    pub fn from_uri(uri: &str) -> Option<WampError> {
        Self::ALL.into_iter().find(|e| e.uri() == uri)
    }
}

impl fmt::Display for WampError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.uri())
    }
}

/// A WAMP error with a human-readable explanation, sent as the ERROR's first argument (the
/// convention Crossbar and Autobahn use, so clients show it in their exception text).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{error}: {message}")]
pub struct Refusal {
    /// The error URI.
    pub error: WampError,
    /// Why, for humans.
    pub message: String,
}

impl Refusal {
    /// A refusal with a reason.
    pub fn new(error: WampError, message: impl Into<String>) -> Self {
        Refusal { error, message: message.into() }
    }

    /// The ERROR answering request `request` of type `request_type`, the reason as its argument.
    pub fn to_message(self, request_type: MessageType, request: u64) -> Message {
        Message::error(request_type, request, self.error.uri(), Payload::args(vec![Value::from(self.message)]))
    }

    /// The refusal an ERROR made by [`Refusal::to_message`] carries, back from another cluster
    /// node; `None` for any other message, or an error URI this router does not send.
    pub fn from_message(message: &Message) -> Option<Refusal> {
        let Message::Error { error, payload, .. } = message else { return None };
        let reason =
            payload.to_values().ok().and_then(|(args, _)| args.first().and_then(Value::as_str).map(str::to_owned));
        Some(Refusal::new(WampError::from_uri(error)?, reason.unwrap_or_else(|| error.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_uri_maps_back_to_its_variant() {
        for error in WampError::ALL {
            assert_eq!(WampError::from_uri(error.uri()), Some(error));
        }
        assert_eq!(WampError::from_uri("com.example.error"), None);
    }

    #[test]
    fn a_refusal_survives_its_error_message() {
        let refusal = Refusal::new(WampError::NoSuchSubscription, "session holds no subscription 7");
        let message = refusal.clone().to_message(MessageType::Call, 3);
        assert_eq!(Refusal::from_message(&message), Some(refusal));
    }
}
