//! The broker: subscriptions shared per topic, events to every subscriber in its own serializer,
//! publisher exclusion, acknowledgements and errors.

mod common;

use std::time::Duration;

use common::*;
use roundhouse::client::{Client, ClientError};
use roundhouse::wire::{Dict, Message, MessageType, Payload, Value};

async fn subscribe(client: &mut Client, topic: &str) -> u64 {
    let request = client.request_id();
    client
        .send(&Message::Subscribe {
            request,
            options: Dict::new(),
            topic: topic.into(),
        })
        .await
        .unwrap();
    match client.recv().await.unwrap() {
        Message::Subscribed {
            request: r,
            subscription,
        } if r == request => subscription,
        other => panic!("{other:?}"),
    }
}

async fn publish(client: &mut Client, topic: &str, options: Dict, args: Vec<Value>) -> u64 {
    let request = client.request_id();
    let payload = Payload::Values(args, Some(Dict::new().with("k", "v")));
    client
        .send(&Message::Publish {
            request,
            options,
            topic: topic.into(),
            payload,
        })
        .await
        .unwrap();
    request
}

async fn expect_no_message(client: &mut Client) {
    client.rx.set_timeout(Duration::from_millis(150));
    assert!(
        matches!(client.recv().await, Err(ClientError::Timeout)),
        "no message expected"
    );
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
    assert!(
        subs.iter().all(|(_, id)| *id == subs[0].1),
        "one subscription id per topic"
    );
    for publisher_ser in SERIALIZERS {
        let mut publisher = join(&router, publisher_ser).await;
        let args = vec![Value::from("hello"), Value::Bytes(vec![9, 8]), Value::UInt(7)];
        publish(&mut publisher, "com.example.news", Dict::new(), args.clone()).await;
        let mut publications = Vec::new();
        for (client, id) in &mut subs {
            match client.recv().await.unwrap() {
                Message::Event {
                    subscription,
                    publication,
                    details,
                    payload,
                } => {
                    assert_eq!(subscription, *id);
                    assert!(details.is_empty());
                    assert_eq!(payload.to_values().unwrap(), (args.clone(), Dict::new().with("k", "v")));
                    publications.push(publication);
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(publications.iter().all(|p| *p == publications[0]));
    }
}

#[tokio::test]
async fn the_publisher_is_excluded_unless_it_asks_otherwise() {
    let router = router().await;
    let mut both = join(&router, SERIALIZERS[0]).await;
    subscribe(&mut both, "com.example.t").await;
    publish(&mut both, "com.example.t", Dict::new(), vec![]).await;
    expect_no_message(&mut both).await;
    publish(
        &mut both,
        "com.example.t",
        Dict::new().with("exclude_me", false),
        vec![Value::UInt(1)],
    )
    .await;
    assert!(matches!(both.recv().await.unwrap(), Message::Event { .. }));
}

#[tokio::test]
async fn acknowledged_publications_get_published_or_an_error() {
    let router = router().await;
    let mut publisher = join(&router, SERIALIZERS[1]).await;
    let ack = Dict::new().with("acknowledge", true);
    let request = publish(&mut publisher, "com.example.nobody.listens", ack.clone(), vec![]).await;
    match publisher.recv().await.unwrap() {
        Message::Published {
            request: r,
            publication,
        } => {
            assert_eq!(r, request);
            assert!((1..=1u64 << 53).contains(&publication));
        }
        other => panic!("{other:?}"),
    }
    publish(&mut publisher, "com..bad", ack.clone(), vec![]).await;
    assert_error(
        &publisher.recv().await.unwrap(),
        MessageType::Publish,
        "wamp.error.invalid_uri",
    );
    publish(&mut publisher, "com..bad", Dict::new(), vec![]).await;
    expect_no_message(&mut publisher).await;
}

#[tokio::test]
async fn unsubscribing_and_leaving_stop_events() {
    let router = router().await;
    let mut a = join(&router, SERIALIZERS[0]).await;
    let mut b = join(&router, SERIALIZERS[1]).await;
    let id = subscribe(&mut a, "com.example.t").await;
    subscribe(&mut b, "com.example.t").await;
    let request = a.request_id();
    a.send(&Message::Unsubscribe {
        request,
        subscription: id,
    })
    .await
    .unwrap();
    assert!(matches!(a.recv().await.unwrap(), Message::Unsubscribed { request: r, .. } if r == request));
    let request = a.request_id();
    a.send(&Message::Unsubscribe {
        request,
        subscription: id,
    })
    .await
    .unwrap();
    assert_error(
        &a.recv().await.unwrap(),
        MessageType::Unsubscribe,
        "wamp.error.no_such_subscription",
    );
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
}

#[tokio::test]
async fn subscribe_refuses_invalid_uris_and_patterns() {
    let router = router().await;
    let mut client = join(&router, SERIALIZERS[0]).await;
    let request = client.request_id();
    client
        .send(&Message::Subscribe {
            request,
            options: Dict::new(),
            topic: "a..b".into(),
        })
        .await
        .unwrap();
    assert_error(
        &client.recv().await.unwrap(),
        MessageType::Subscribe,
        "wamp.error.invalid_uri",
    );
    let request = client.request_id();
    let options = Dict::new().with("match", "prefix");
    client
        .send(&Message::Subscribe {
            request,
            options,
            topic: "com.example".into(),
        })
        .await
        .unwrap();
    assert_error(
        &client.recv().await.unwrap(),
        MessageType::Subscribe,
        "wamp.error.invalid_argument",
    );
}
