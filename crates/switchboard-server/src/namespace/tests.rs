//! Every rule of [`Namespaces`]: lookup, subscribe, publish, history, presence, the built-in
//! `chat` and `user`, and the stream options the hub gets.

use super::*;

fn anon() -> Identity {
    Identity::anonymous()
}

fn alice() -> Identity {
    Identity::user("alice")
}

fn code(r: Result<&NamespaceRules, AppError>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(e) => e.code.as_str(),
    }
}

fn message(r: Result<&NamespaceRules, AppError>) -> String {
    r.err().map(|e| e.message).unwrap_or_default()
}

/// `[namespaces.private]` with tokens only, `[namespaces.members]` for users, `[namespaces.
/// board]` for its subscribers to write on.
fn configured() -> Namespaces {
    Namespaces::default()
        .namespace("private", NamespaceRules::closed())
        .namespace(
            "members",
            NamespaceRules::closed()
                .subscribe(SubscribeRule::Authenticated)
                .publish(PublishRule::Authenticated),
        )
        .namespace(
            "board",
            NamespaceRules::open().publish(PublishRule::Subscribers),
        )
}

#[test]
fn a_topics_namespace_is_what_comes_before_its_first_colon() {
    assert_eq!(namespace_of("news"), None);
    assert_eq!(namespace_of("private:a"), Some("private"));
    assert_eq!(namespace_of("a:b:c"), Some("a"));
    assert_eq!(namespace_of(":x"), Some(""));
}

#[test]
fn zero_config_is_open_as_before() {
    let ns = Namespaces::default();
    for topic in ["news", "any:thing", "chat:lobby", "a/b.c-d_e"] {
        assert_eq!(
            ns.rules_for(topic),
            Some(&NamespaceRules::open()),
            "{topic}"
        );
        assert_eq!(code(ns.check_subscribe(&anon(), topic, false)), "ok");
        assert_eq!(code(ns.check_publish(&anon(), topic, false)), "ok");
        assert_eq!(code(ns.check_history(&anon(), topic, false)), "ok");
        assert_eq!(code(ns.check_presence(topic, true)), "ok");
    }
    let open = NamespaceRules::open();
    assert!(open.presence && !open.join_leave);
    assert_eq!((open.history_size, open.history_ttl), (None, None));
    assert_eq!(Namespaces::new(), Namespaces::default());
}

#[test]
fn topics_rules_cover_every_namespace_until_one_is_named() {
    let ns = Namespaces::default()
        .topics(NamespaceRules::open().subscribe(SubscribeRule::Authenticated));
    assert_eq!(
        code(ns.check_subscribe(&anon(), "news", false)),
        "permission_denied"
    );
    assert_eq!(
        code(ns.check_subscribe(&anon(), "any:thing", false)),
        "permission_denied"
    );
    assert_eq!(code(ns.check_subscribe(&alice(), "any:thing", false)), "ok");
    // Adjusting a built-in one does not close the others.
    let ns = Namespaces::default().namespace("chat", NamespaceRules::open().history_size(5));
    assert_eq!(code(ns.rules("any:thing")), "ok");
}

#[test]
fn once_a_namespace_is_named_the_others_are_unknown() {
    let ns = configured();
    for topic in ["other:x", ":x", "Private:x"] {
        let r = ns.check_subscribe(&alice(), topic, true);
        assert_eq!(code(r.clone()), "unknown_namespace", "{topic}");
        assert!(
            message(r).contains("its namespaces: board, chat, members, private, user"),
            "names the ones there are"
        );
        assert_eq!(
            code(ns.check_publish(&alice(), topic, true)),
            "unknown_namespace"
        );
        assert_eq!(
            code(ns.check_history(&alice(), topic, true)),
            "unknown_namespace"
        );
        assert_eq!(code(ns.check_presence(topic, true)), "unknown_namespace");
    }
    // Topics without a namespace, and the built-in ones, stay known.
    for topic in ["news", "chat:lobby", "user:alice", "private:x"] {
        assert!(ns.rules_for(topic).is_some(), "{topic}");
    }
}

#[test]
fn subscribe_rules() {
    let ns = configured();
    // token: only with a subscription token, whoever asks.
    let r = ns.check_subscribe(&alice(), "private:x", false);
    assert_eq!(code(r.clone()), "permission_denied");
    assert_eq!(
        message(r),
        r#"subscribing to "private:x" needs a subscription token"#
    );
    assert_eq!(code(ns.check_subscribe(&anon(), "private:x", true)), "ok");
    // authenticated: a user, or a subscription token.
    let r = ns.check_subscribe(&anon(), "members:x", false);
    assert_eq!(code(r.clone()), "permission_denied");
    assert!(message(r).contains("needs an authenticated connection"));
    assert_eq!(code(ns.check_subscribe(&alice(), "members:x", false)), "ok");
    assert_eq!(code(ns.check_subscribe(&anon(), "members:x", true)), "ok");
    // A token with an empty user is anonymous.
    let empty = Identity::user("");
    assert_eq!(
        code(ns.check_subscribe(&empty, "members:x", false)),
        "permission_denied"
    );
    // anyone.
    assert_eq!(code(ns.check_subscribe(&anon(), "board:x", false)), "ok");
    assert_eq!(code(ns.check_subscribe(&anon(), "news", false)), "ok");
}

#[test]
fn publish_rules() {
    let ns = configured();
    // nobody: not even subscribed users.
    let r = ns.check_publish(&alice(), "private:x", true);
    assert_eq!(code(r.clone()), "permission_denied");
    assert!(message(r).contains("POST /api/publish"));
    // subscribers.
    let r = ns.check_publish(&alice(), "board:x", false);
    assert_eq!(
        message(r),
        r#"publishing to "board:x" needs a subscription to it"#
    );
    assert_eq!(code(ns.check_publish(&anon(), "board:x", true)), "ok");
    // authenticated.
    assert_eq!(
        code(ns.check_publish(&anon(), "members:x", true)),
        "permission_denied"
    );
    assert_eq!(code(ns.check_publish(&alice(), "members:x", false)), "ok");
    // anyone.
    assert_eq!(code(ns.check_publish(&anon(), "news", false)), "ok");
}

#[test]
fn history_follows_the_subscribe_rule() {
    let ns = configured();
    assert_eq!(
        code(ns.check_history(&anon(), "private:x", true)),
        "ok",
        "subscribed"
    );
    let r = ns.check_history(&alice(), "private:x", false);
    assert_eq!(
        message(r),
        r#"reading the history of "private:x" needs a subscription token"#
    );
    assert_eq!(
        code(ns.check_history(&anon(), "members:x", false)),
        "permission_denied"
    );
    assert_eq!(code(ns.check_history(&alice(), "members:x", false)), "ok");
    assert_eq!(
        code(ns.check_history(&anon(), "user:alice", false)),
        "permission_denied"
    );
    assert_eq!(code(ns.check_history(&alice(), "user:alice", false)), "ok");
}

#[test]
fn presence_off_is_refused_and_on_needs_a_subscription() {
    let ns = Namespaces::default()
        .topics(NamespaceRules::open().presence(false))
        .namespace("quiet", NamespaceRules::open().presence(false))
        .namespace("loud", NamespaceRules::open());
    let r = ns.check_presence("quiet:x", true);
    assert_eq!(code(r.clone()), "permission_denied");
    assert_eq!(message(r), r#"presence is off in the "quiet" namespace"#);
    assert_eq!(
        message(ns.check_presence("news", true)),
        "presence is off in topics without a namespace"
    );
    assert_eq!(code(ns.check_presence("loud:x", false)), "not_subscribed");
    assert_eq!(code(ns.check_presence("loud:x", true)), "ok");
}

#[test]
fn user_topics_are_their_users_only() {
    for ns in [Namespaces::default(), configured()] {
        let r = ns.check_subscribe(&anon(), "user:alice", true);
        assert_eq!(code(r.clone()), "permission_denied");
        assert!(message(r).contains(r#"needs a connection of user "alice""#));
        let bob = Identity::user("bob");
        assert_eq!(
            code(ns.check_subscribe(&bob, "user:alice", true)),
            "permission_denied"
        );
        assert_eq!(
            code(ns.check_subscribe(&alice(), "user:alice", false)),
            "ok"
        );
        // The whole rest is the id.
        assert_eq!(
            code(ns.check_subscribe(&alice(), "user:alice:x", false)),
            "permission_denied"
        );
        assert_eq!(
            code(ns.check_subscribe(&anon(), "user:", false)),
            "permission_denied"
        );
        // Clients do not publish to it by default, not even its user.
        assert_eq!(
            code(ns.check_publish(&alice(), "user:alice", true)),
            "permission_denied"
        );
    }
    // Configurable like the others, but for the owner rule.
    let ns = Namespaces::default().namespace(
        "user",
        NamespaceRules::user()
            .subscribe(SubscribeRule::Anyone)
            .publish(PublishRule::Subscribers)
            .presence(false),
    );
    assert_eq!(
        code(ns.check_subscribe(&anon(), "user:alice", false)),
        "permission_denied"
    );
    assert_eq!(code(ns.check_publish(&alice(), "user:alice", true)), "ok");
    assert_eq!(
        code(ns.check_presence("user:alice", true)),
        "permission_denied"
    );
    assert_eq!(
        code(ns.rules("other:x")),
        "ok",
        "user is built in: others stay open"
    );
}

#[test]
fn chat_rooms_are_open_to_watch_and_configurable() {
    let ns = configured();
    assert_eq!(code(ns.check_subscribe(&anon(), "chat:lobby", false)), "ok");
    let ns = ns.namespace(
        "chat",
        NamespaceRules::open()
            .subscribe(SubscribeRule::Authenticated)
            .publish(PublishRule::Authenticated),
    );
    assert_eq!(
        code(ns.check_subscribe(&anon(), "chat:lobby", false)),
        "permission_denied"
    );
    assert_eq!(
        code(ns.check_publish(&anon(), "chat:lobby", true)),
        "permission_denied"
    );
    assert_eq!(code(ns.check_publish(&alice(), "chat:lobby", true)), "ok");
}

#[test]
fn closed_rules_deny_what_they_do_not_allow() {
    let c = NamespaceRules::closed();
    assert_eq!(
        (c.subscribe, c.publish),
        (SubscribeRule::Token, PublishRule::Nobody)
    );
    assert!(c.presence && !c.join_leave);
    let u = NamespaceRules::user();
    assert_eq!(u.publish, PublishRule::Nobody);
    let names: Vec<_> = [
        SubscribeRule::Anyone,
        SubscribeRule::Authenticated,
        SubscribeRule::Token,
    ]
    .map(SubscribeRule::as_str)
    .into();
    assert_eq!(names, ["anyone", "authenticated", "token"]);
    let names: Vec<_> = [
        PublishRule::Nobody,
        PublishRule::Subscribers,
        PublishRule::Authenticated,
        PublishRule::Anyone,
    ]
    .map(PublishRule::as_str)
    .into();
    assert_eq!(names, ["nobody", "subscribers", "authenticated", "anyone"]);
}

#[test]
fn each_namespace_gets_its_history_bounds_and_the_rest_the_servers() {
    let defaults = HistoryLimits {
        size: 100,
        ttl: Duration::from_secs(300),
    };
    // Nothing set anywhere: the defaults, without a lookup.
    let plain = Namespaces::default().stream_options(defaults);
    assert_eq!(plain.options("any:x").history, defaults);

    let ns = configured()
        .namespace("live", NamespaceRules::open().history_size(0))
        .namespace(
            "brief",
            NamespaceRules::open().history_ttl(Duration::from_secs(60)),
        )
        .topics(NamespaceRules::open().history_size(10));
    let options = ns.stream_options(defaults);
    let of = |topic| options.options(topic).history;
    assert_eq!(of("live:x").size, 0);
    assert!(!of("live:x").enabled());
    assert_eq!(
        of("brief:x"),
        HistoryLimits {
            size: 100,
            ttl: Duration::from_secs(60)
        }
    );
    assert_eq!(of("news").size, 10);
    assert_eq!(of("private:x"), defaults);
    assert_eq!(of("unknown:x"), defaults, "the API may publish anywhere");
}
