//! The dashboard attacked over plain HTTP: another signed-in person, a forged or missing form
//! token, a forged session; each refused, and nothing revoked.

use std::sync::Arc;

use consent_broker::http::broker::BrokerEndpoints;
use consent_broker::http::dashboard::{ChatSettings, Dashboard};
use consent_broker::*;

use super::{Server, World, raw_client};

async fn platform(world: &World) -> Server {
    let dashboard = Dashboard::new(Arc::clone(&world.broker), world.sessions.clone(), &[4; 32])
        .chat(ChatSettings {
            platform: world.platform.clone(),
            bank_data_url: world.data_url(),
            client: world.client.clone(),
            relay_file: None,
        });
    Server::start(
        BrokerEndpoints::new(Arc::clone(&world.broker))
            .router()
            .merge(dashboard.router()),
    )
    .await
}

/// The form token on a page.
fn form_token(page: &str) -> String {
    let start = page.find("name=\"csrf\" value=\"").unwrap() + 19;
    let end = page[start..].find('"').unwrap();
    page[start..start + end].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_but_the_subject_sees_or_stops_a_consent_and_forms_need_their_token() {
    let world = World::new().await;
    let server = platform(&world).await;
    let base = server.origin();
    let http = raw_client();
    let alice = world.cookie(&world.subject);
    let mallory = world.cookie(&SubjectId::new("mallory").unwrap());
    let consent = world.consent.as_str();
    let entry = world.broker.consent_history(&world.consent).unwrap()[0].seq;
    // Alice sees her consent; Mallory, signed in, gets a 404 for each of its pages.
    for path in [
        format!("/dashboard/consents/{consent}"),
        format!("/dashboard/consents/{consent}/revoke"),
        format!("/dashboard/consents/{consent}/receipts/{entry}"),
        format!("/dashboard/consents/{consent}/receipts/{entry}/json"),
    ] {
        let own = http
            .get(format!("{base}{path}"))
            .header("cookie", &alice)
            .send()
            .await
            .unwrap();
        assert_eq!(own.status(), 200, "{path}");
        let other = http
            .get(format!("{base}{path}"))
            .header("cookie", &mallory)
            .send()
            .await
            .unwrap();
        assert_eq!(other.status(), 404, "{path}");
        let nobody = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(nobody.status(), 401, "{path}");
    }
    let mallorys_list = http
        .get(format!("{base}/dashboard"))
        .header("cookie", &mallory)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(mallorys_list.contains("0 in all"), "{mallorys_list}");
    assert!(!mallorys_list.contains(consent));

    // Revoking: Mallory with her own valid form token; Alice's cookie without a token, with
    // Mallory's token, with a forged one; a forged session. None revokes.
    let mallorys_token = form_token(
        &http
            .get(format!("{base}/chat"))
            .header("cookie", &mallory)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    let revoke = format!("{base}/dashboard/consents/{consent}/revoke");
    let attempts = [
        (mallory.clone(), Some(mallorys_token.clone()), 404),
        (alice.clone(), None, 403),
        (alice.clone(), Some(mallorys_token.clone()), 403),
        (alice.clone(), Some("9999999999.AAAA".to_owned()), 403),
        (
            "cb_session=YWxpY2U.9999999999.AAAA".to_owned(),
            Some(mallorys_token),
            401,
        ),
    ];
    for (cookie, token, status) in attempts {
        let body = token.map_or_else(String::new, |t| format!("csrf={t}"));
        let response = http
            .post(&revoke)
            .header("cookie", cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status);
        assert_eq!(
            world.broker.consent(&world.consent).unwrap().status,
            ConsentStatus::Authorised
        );
    }
    // With her own token, Alice stops it.
    let confirm = http
        .get(&revoke)
        .header("cookie", &alice)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let response = http
        .post(&revoke)
        .header("cookie", &alice)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={}", form_token(&confirm)))
        .send()
        .await
        .unwrap();
    // Redirected (303) to the consent's page with the notice.
    assert_eq!(response.status(), 200);
    assert_eq!(response.url().query(), Some("notice=revoked"));
    assert!(matches!(
        world.broker.consent(&world.consent).unwrap().status,
        ConsentStatus::Revoked { .. }
    ));
    server.stop().await;
    world.bank_server.stop().await;
}
