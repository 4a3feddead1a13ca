//! The broker: subscriptions shared per topic, events to every subscriber in its own serializer,
//! publisher exclusion, acknowledgements and errors.

mod common;

use std::time::Duration;

use common::*;
use roundhouse::client::{Client, ClientError};
use roundhouse::wire::{Dict, Message, MessageType, Payload, Value};

async fn subscribe(client: &mut Client, topic: &str) -> u64 {
    let request = client.request_id();
    client.send(&Message::Subscribe { request, options: Dict::new(), topic: topic.into() }).await.unwrap();
    match client.recv().await.unwrap() {
        Message::Subscribed { request: r, subscription } if r == request => subscription,
        other => panic!("{other:?}"),
    }
}

async fn publish(client: &mut Client, topic: &str, options: Dict, args: Vec<Value>) -> u64 {
    let request = client.request_id();
    let payload = Payload::Values(args, Some(Dict::new().with("k", "v")));
    client.send(&Message::Publish { request, options, topic: topic.into(), payload }).await.unwrap();
    request
}

async fn expect_no_message(client: &mut Client) {
    client.rx.set_timeout(Duration::from_millis(150));
    assert!(matches!(client.recv().await, Err(ClientError::Timeout)), "no message expected");
    client.rx.set_timeout(Duration::from_secs(5));
}

#[tokio::test]
async fn events_reach_every_subscriber_in_its_own_serializer() {
    let router = router().await;
    let mut subs = Vec::new();
    for ser in [SERIALIZERS[0], SERIALIZERS[1], SERIALIZERS[0]] {
        let mut client = join(&router, ser).await;
        let id = subscribe(&mut client, "com.example.news").await;
        subs.push((client, id));
    }
    assert!(subs.iter().all(|(_, id)| *id == subs[0].1), "one subscription id per topic");
    for publisher_ser in SERIALIZERS {
        let mut publisher = join(&router, publisher_ser).await;
        let args = vec![Value::from("hello"), Value::Bytes(vec![9, 8]), Value::UInt(7)];
        publish(&mut publisher, "com.example.news", Dict::new(), args.clone()).await;
        let mut publications = Vec::new();
        for (client, id) in &mut subs {
            match client.recv().await.unwrap() {
                Message::Event { subscription, publication, details, payload } => {
                    assert_eq!(subscription, *id);
                    assert!(details.is_empty());
                    assert_eq!(payload.to_values().unwrap(), (args.clone(), Dict::new().with("k", "v")));
                    publications.push(publication);
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(publications.iter().all(|p| *p == publications[0]));
        say_goodbye(publisher).await;
    }
    for (client, _) in subs {
        say_goodbye(client).await;
    }
    assert_empty(&router).await;
}

#[tokio::test]
async fn the_publisher_is_excluded_unless_it_asks_otherwise() {
    let router = router().await;
    let mut both = join(&router, SERIALIZERS[0]).await;
    subscribe(&mut both, "com.example.t").await;
    publish(&mut both, "com.example.t", Dict::new(), vec![]).await;
    expect_no_message(&mut both).await;
    publish(&mut both, "com.example.t", Dict::new().with("exclude_me", false), vec![Value::UInt(1)]).await;
    assert!(matches!(both.recv().await.unwrap(), Message::Event { .. }));
    say_goodbye(both).await;
    assert_empty(&router).await;
}

#[tokio::test]
async fn acknowledged_publications_get_published_or_an_error() {
    let router = router().await;
    let mut publisher = join(&router, SERIALIZERS[1]).await;
    let ack = Dict::new().with("acknowledge", true);
    let request = publish(&mut publisher, "com.example.nobody.listens", ack.clone(), vec![]).await;
    match publisher.recv().await.unwrap() {
        Message::Published { request: r, publication } => {
            assert_eq!(r, request);
            assert!((1..=1u64 << 53).contains(&publication));
        }
        other => panic!("{other:?}"),
    }
    publish(&mut publisher, "com..bad", ack.clone(), vec![]).await;
    assert_error(&publisher.recv().await.unwrap(), MessageType::Publish, "wamp.error.invalid_uri");
    publish(&mut publisher, "com..bad", Dict::new(), vec![]).await;
    expect_no_message(&mut publisher).await;
    say_goodbye(publisher).await;
    assert_empty(&router).await;
}

#[tokio::test]
async fn unsubscribing_and_leaving_stop_events() {
    let router = router().await;
    let mut a = join(&router, SERIALIZERS[0]).await;
    let mut b = join(&router, SERIALIZERS[1]).await;
    let id = subscribe(&mut a, "com.example.t").await;
    subscribe(&mut b, "com.example.t").await;
    let request = a.request_id();
    a.send(&Message::Unsubscribe { request, subscription: id }).await.unwrap();
    assert!(matches!(a.recv().await.unwrap(), Message::Unsubscribed { request: r, .. } if r == request));
    let request = a.request_id();
    a.send(&Message::Unsubscribe { request, subscription: id }).await.unwrap();
    assert_error(&a.recv().await.unwrap(), MessageType::Unsubscribe, "wamp.error.no_such_subscription");
    drop(b);
    let broker_empty = || router.shared().realms[REALM].broker_is_empty();
    for _ in 0..200 {
        if broker_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(broker_empty(), "a dropped subscriber's subscription is gone");
    let mut publisher = join(&router, SERIALIZERS[0]).await;
    publish(&mut publisher, "com.example.t", Dict::new(), vec![]).await;
    expect_no_message(&mut a).await;
    say_goodbye(publisher).await;
    say_goodbye(a).await;
    assert_empty(&router).await;
}

#[tokio::test]
async fn subscribe_refuses_invalid_uris() {
    let router = router().await;
    let mut client = join(&router, SERIALIZERS[0]).await;
    for (topic, options, error) in [
        ("a..b", Dict::new(), "wamp.error.invalid_uri"),
        ("a b", Dict::new().with("match", "wildcard"), "wamp.error.invalid_uri"),
    ] {
        let request = client.request_id();
        client.send(&Message::Subscribe { request, options, topic: topic.into() }).await.unwrap();
        assert_error(&client.recv().await.unwrap(), MessageType::Subscribe, error);
    }
    say_goodbye(client).await;
    assert_empty(&router).await;
}

#[tokio::test]
async fn an_option_of_the_wrong_type_is_a_protocol_violation() {
    let router = router().await;
    for options in [Dict::new().with("match", "regex"), Dict::new().with("match", 1u64)] {
        let mut client = join(&router, SERIALIZERS[1]).await;
        let request = client.request_id();
        client.send(&Message::Subscribe { request, options, topic: "com.example".into() }).await.unwrap();
        assert!(
            matches!(client.recv().await.unwrap(), Message::Abort { reason, .. } if reason == "wamp.error.protocol_violation")
        );
        drop(client);
    }
    let mut publisher = join(&router, SERIALIZERS[0]).await;
    publish(&mut publisher, "com.example.t", Dict::new().with("acknowledge", "yes"), vec![]).await;
    assert!(
        matches!(publisher.recv().await.unwrap(), Message::Abort { reason, .. } if reason == "wamp.error.protocol_violation")
    );
    drop(publisher);
    assert_empty(&router).await;
}

async fn subscribe_with(client: &mut Client, topic: &str, options: Dict) -> u64 {
    let request = client.request_id();
    client.send(&Message::Subscribe { request, options, topic: topic.into() }).await.unwrap();
    match client.recv().await.unwrap() {
        Message::Subscribed { subscription, .. } => subscription,
        other => panic!("{other:?}"),
    }
}

async fn next_event(client: &mut Client) -> (u64, Dict) {
    match client.recv().await.unwrap() {
        Message::Event { subscription, details, .. } => (subscription, details),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn prefix_and_wildcard_subscriptions_get_the_topic_in_details() {
    for ser in SERIALIZERS {
        let router = router().await;
        let mut prefix = join(&router, ser).await;
        let mut wildcard = join(&router, ser).await;
        let mut exact = join(&router, ser).await;
        let p = subscribe_with(&mut prefix, "com.myapp.topic", Dict::new().with("match", "prefix")).await;
        let w = subscribe_with(&mut wildcard, "com.myapp..update", Dict::new().with("match", "wildcard")).await;
        let e = subscribe_with(&mut exact, "com.myapp.topic.update", Dict::new()).await;
        assert!(p != w && w != e && p != e, "one subscription per (topic, match)");
        let mut publisher = join(&router, ser).await;
        publish(&mut publisher, "com.myapp.topic.update", Dict::new(), vec![]).await;
        let (id, details) = next_event(&mut prefix).await;
        assert_eq!((id, details.get("topic").and_then(Value::as_str)), (p, Some("com.myapp.topic.update")));
        let (id, details) = next_event(&mut wildcard).await;
        assert_eq!((id, details.get("topic").and_then(Value::as_str)), (w, Some("com.myapp.topic.update")));
        let (id, details) = next_event(&mut exact).await;
        assert_eq!(id, e);
        assert!(details.get("topic").is_none(), "exact matches carry no topic");
        // A string prefix, not a component prefix; wildcards match whole components only.
        publish(&mut publisher, "com.myapp.topics.update", Dict::new(), vec![]).await;
        assert_eq!(next_event(&mut prefix).await.0, p);
        assert_eq!(next_event(&mut wildcard).await.0, w);
        publish(&mut publisher, "com.myapp.a.b.update", Dict::new(), vec![]).await;
        expect_no_message(&mut wildcard).await;
        expect_no_message(&mut exact).await;
        for client in [publisher, prefix, wildcard, exact] {
            say_goodbye(client).await;
        }
        assert_empty(&router).await;
    }
}

#[tokio::test]
async fn exclude_and_eligible_lists_pick_the_recipients() {
    let router = router().await;
    let mut subs = Vec::new();
    for _ in 0..3 {
        let mut client = join(&router, SERIALIZERS[1]).await;
        subscribe(&mut client, "com.example.t").await;
        subs.push(client);
    }
    let ids: Vec<u64> = subs.iter().map(|c| c.session_id()).collect();
    let mut publisher = join(&router, SERIALIZERS[0]).await;
    let list = |xs: &[u64]| Value::List(xs.iter().map(|x| Value::UInt(*x)).collect());
    let cases = [
        (Dict::new().with("exclude", list(&[ids[0]])), [false, true, true]),
        (Dict::new().with("eligible", list(&[ids[0], ids[2]])), [true, false, true]),
        (Dict::new().with("eligible", list(&[ids[0], ids[2]])).with("exclude", list(&[ids[2]])), [true, false, false]),
        (
            Dict::new().with("exclude_authid", Value::List(vec![Value::from(format!("anonymous-{}", ids[1]))])),
            [true, false, true],
        ),
        (Dict::new().with("eligible_authrole", Value::List(vec![Value::from("anonymous")])), [true, true, true]),
        (Dict::new().with("eligible_authrole", Value::List(vec![Value::from("admin")])), [false, false, false]),
    ];
    for (options, expected) in cases {
        publish(&mut publisher, "com.example.t", options.clone(), vec![]).await;
        for (client, receives) in subs.iter_mut().zip(expected) {
            if receives {
                next_event(client).await;
            } else {
                expect_no_message(client).await;
            }
        }
    }
    say_goodbye(publisher).await;
    for client in subs {
        say_goodbye(client).await;
    }
    assert_empty(&router).await;
}

#[tokio::test]
async fn disclose_me_names_the_publisher() {
    let router = router().await;
    let mut sub = join(&router, SERIALIZERS[0]).await;
    subscribe(&mut sub, "com.example.t").await;
    let mut publisher = join(&router, SERIALIZERS[1]).await;
    publish(&mut publisher, "com.example.t", Dict::new(), vec![]).await;
    assert!(next_event(&mut sub).await.1.get("publisher").is_none(), "not disclosed unless asked");
    publish(&mut publisher, "com.example.t", Dict::new().with("disclose_me", true), vec![]).await;
    let (_, details) = next_event(&mut sub).await;
    assert_eq!(details.get("publisher"), Some(&Value::UInt(publisher.session_id())));
    let authid = format!("anonymous-{}", publisher.session_id());
    assert_eq!(details.get("publisher_authid").and_then(Value::as_str), Some(authid.as_str()));
    assert_eq!(details.get("publisher_authrole").and_then(Value::as_str), Some("anonymous"));
    say_goodbye(publisher).await;
    say_goodbye(sub).await;
    assert_empty(&router).await;
}
