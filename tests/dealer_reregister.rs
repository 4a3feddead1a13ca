//! `REGISTER.Options.force_reregister` through real sockets: a principal's new session takes over
//! the `single` registration its stale session still holds, and its old session is told; another
//! principal, an anonymous session, or a shared registration is refused as without the option.

mod common;

use common::*;
use roundhouse::client::Client;
use roundhouse::wire::{Dict, Message, MessageType, Serializer, Value};
use roundhouse::RouterHandle;

const AUTH: &str = "auth";
const P: &str = "com.app.service";

async fn auth_router() -> RouterHandle {
    router_with(|c| c.realms.push(common::ticket_realm(AUTH))).await
}

/// A session of `authid` (ticket `<authid>-ticket`), or anonymous, announcing
/// `registration_revocation`.
async fn session(router: &RouterHandle, authid: Option<&str>) -> Client {
    let mut client = Client::connect(&router.url(), Serializer::Json).await.unwrap();
    let features = Value::Dict(Dict::new().with("features", Dict::new().with("registration_revocation", true)));
    let roles = Dict::new().with("callee", features).with("caller", Value::Dict(Dict::new()));
    let mut details = Dict::new().with("roles", roles);
    if let Some(authid) = authid {
        details.insert("authmethods", Value::List(vec![Value::from("ticket")]));
        details.insert("authid", authid);
    }
    client.send(&Message::Hello { realm: AUTH.into(), details }).await.unwrap();
    loop {
        match client.recv().await.unwrap() {
            Message::Welcome { .. } => return client,
            Message::Challenge { .. } => {
                let signature = format!("{}-ticket", authid.unwrap());
                client.send(&Message::Authenticate { signature, extra: Dict::new() }).await.unwrap();
            }
            other => panic!("expected WELCOME, got {other:?}"),
        }
    }
}

fn forced() -> Dict {
    Dict::new().with("force_reregister", true)
}

#[tokio::test]
async fn the_same_principal_replaces_its_stale_registration() {
    let router = auth_router().await;
    let mut stale = session(&router, Some("joe")).await;
    let old = stale.register(P, Dict::new()).await.unwrap();
    let mut fresh = session(&router, Some("joe")).await;
    // Without the option: refused as always.
    let reply = unexpected(fresh.register(P, Dict::new()).await);
    assert_error(&reply, MessageType::Register, "wamp.error.procedure_already_exists");

    let new = fresh.register(P, forced()).await.unwrap();
    assert_ne!(new, old, "a new registration");
    match stale.recv().await.unwrap() {
        Message::Unregistered { request, details } => {
            assert_eq!(request, 0);
            let details = details.expect("details");
            assert_eq!(details.get("registration").and_then(Value::as_u64), Some(old));
            assert!(details.get("reason").and_then(Value::as_str).is_some_and(|r| r.contains("force_reregister")));
        }
        other => panic!("expected UNREGISTERED, got {other:?}"),
    }
    // Calls now reach the new session.
    let mut caller = session(&router, None).await;
    let request = send_call(&mut caller, P).await;
    let Message::Invocation { request: invocation, registration, .. } = fresh.recv().await.unwrap() else {
        panic!("the new session serves")
    };
    assert_eq!(registration, new);
    let payload = roundhouse::wire::Payload::args(vec![Value::from("fresh")]);
    fresh.send(&Message::Yield { request: invocation, options: Dict::new(), payload }).await.unwrap();
    match caller.recv().await.unwrap() {
        Message::Result { request: r, payload, .. } => {
            assert_eq!(r, request);
            assert_eq!(first_arg(&payload), "fresh");
        }
        other => panic!("expected RESULT, got {other:?}"),
    }
    for client in [stale, fresh, caller] {
        say_goodbye(client).await;
    }
    assert_empty(&router).await;
}

#[tokio::test]
async fn another_principal_an_anonymous_session_or_a_shared_registration_is_not_replaced() {
    let router = auth_router().await;
    let mut joe = session(&router, Some("joe")).await;
    joe.register(P, Dict::new()).await.unwrap();
    let mut ann = session(&router, Some("ann")).await;
    let reply = unexpected(ann.register(P, forced()).await);
    assert_error(&reply, MessageType::Register, "wamp.error.procedure_already_exists");

    let mut anonymous = session(&router, None).await;
    let shared = "com.app.anon";
    anonymous.register(shared, Dict::new()).await.unwrap();
    let mut anonymous2 = session(&router, None).await;
    let reply = unexpected(anonymous2.register(shared, forced()).await);
    assert_error(&reply, MessageType::Register, "wamp.error.procedure_already_exists");

    let pool = "com.app.pool";
    joe.register(pool, rule("roundrobin")).await.unwrap();
    let mut joe2 = session(&router, Some("joe")).await;
    let reply = unexpected(joe2.register(pool, forced().with("invoke", "first")).await);
    assert_error(&reply, MessageType::Register, "wamp.error.procedure_exists_with_different_invocation_policy");

    // Nobody was told anything.
    for client in [&mut joe, &mut anonymous] {
        if let Ok(message) = tokio::time::timeout(std::time::Duration::from_millis(100), client.recv()).await {
            panic!("expected nothing, got {message:?}");
        }
    }
    for client in [joe, ann, anonymous, anonymous2, joe2] {
        say_goodbye(client).await;
    }
    assert_empty(&router).await;
}
