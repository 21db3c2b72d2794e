//! Trips, bookings, offers and boarding (CONTRACT §4 "Trips and bookings", §2 offers and
//! `conductor:scan`), through real HTTP and Socket.IO clients on both modes: the ride flow
//! end to end with two drivers racing on two nodes, seats never oversold, the status
//! machine, offer deadlines and re-offers, boarding once, and who may do what.

use std::time::Duration;

use serde_json::{Value, json};

use crate::both_modes;
use crate::common::*;

async fn post(url: String, token: &str, body: Value) -> (u16, Value) {
    call(reqwest::Method::POST, url, Some(token), Some(body)).await
}

/// A connected driver subscribed to offers, reporting a position `km` north of `origin`.
async fn driver_at(url: &str, id: &str, origin: (f64, f64), km: f64, filters: Value) -> Client {
    let c = Client::connect(url, &sign(json!({"sub": id, "role": "DRIVER", "name": format!("Driver {id}")}))).await;
    assert_ok(&c.ack("driver:subscribe", json!({ "filters": filters })).await);
    let lat = origin.0 + km / 111.195;
    assert_ok(&c.ack("driver:location:update", json!({ "lat": lat, "lng": origin.1 })).await);
    c
}

const ORIGIN: (f64, f64) = (48.85, 2.35);

async fn the_ride_flow_runs_end_to_end(mode: Mode) {
    let h = Harness::start(mode, &[]).await;
    let mut admin = Client::connect(&h.b(), &token("adm", "ADMIN")).await;
    assert_ok(&admin.ack("admin:subscribe", json!({})).await);
    let mut near = driver_at(&h.a(), "d-near", ORIGIN, 1.0, json!({})).await;
    let mut far = driver_at(&h.b(), "d-far", ORIGIN, 3.0, json!({ "tripTypes": ["PRIVATE"] })).await;
    let _out_of_range = driver_at(&h.b(), "d-away", ORIGIN, 30.0, json!({})).await;
    let passenger_token = sign(json!({"sub": "p1", "role": "PASSENGER", "name": "Ada"}));
    let mut passenger = Client::connect(&h.b(), &passenger_token).await;

    // Create: a PRIVATE published trip is offered at once, nearest first.
    let (status, trip) = post(format!("{}/api/trips", h.a()), &passenger_token, trip_body("PRIVATE", 3, ORIGIN)).await;
    assert_eq!(status, 201, "{trip}");
    let trip_id = trip["id"].as_str().expect("id").to_string();
    assert_eq!(trip["status"], json!("PUBLISHED"));
    assert_eq!(trip["availableSeats"], json!(3));
    assert_eq!(trip["organizerId"], json!("p1"));
    assert_eq!(trip["origin"]["name"], json!("Central Station"));
    assert!(trip["driverId"].is_null());
    let created = admin.expect("trip.created", "admin events").await;
    assert_eq!(created["tripId"], json!(trip_id));
    assert_eq!(created["organizerId"], json!("p1"));
    let offer = near.expect("trip.offer.created", "nearest driver").await;
    assert_eq!(offer["tripId"], json!(trip_id));
    let km = offer["distanceKm"].as_f64().expect("distanceKm");
    assert!((km - 1.0).abs() < 0.01, "{offer}");
    assert_eq!(offer["urgency"], json!("high"));
    assert_eq!(offer["seats"], json!(3));
    assert_eq!(offer["currency"], json!("EUR"));
    assert_eq!(offer["estimatedEarnings"], json!(37.5));
    assert!(offer["acceptanceDeadline"].is_string() && offer["eventId"].is_string(), "{offer}");
    let far_offer = far.expect("trip.offer.created", "second driver on the other node").await;
    assert!((far_offer["distanceKm"].as_f64().expect("km") - 3.0).abs() < 0.01);

    // Book before a driver is assigned: PENDING, with reference, seat and ticket.
    let (status, booking) = post(
        format!("{}/api/bookings", h.b()),
        &passenger_token,
        json!({ "tripId": trip_id, "seatsBooked": 2, "pickupPoint": "Gate 3" }),
    )
    .await;
    assert_eq!(status, 201, "{booking}");
    assert_eq!(booking["status"], json!("PENDING"));
    assert_eq!(booking["seatNumber"], json!(1));
    assert_eq!(booking["seatsBooked"], json!(2));
    assert_eq!(booking["price"], json!(25.0));
    assert_eq!(booking["passengerName"], json!("Ada"));
    assert!(booking["referenceCode"].as_str().is_some_and(|r| r.starts_with("FC-")), "{booking}");
    assert!(booking["ticketToken"].is_string());

    // Two drivers on two nodes accept at once: exactly one wins.
    let near_token = sign(json!({"sub": "d-near", "role": "DRIVER", "name": "Driver d-near"}));
    let far_token = sign(json!({"sub": "d-far", "role": "DRIVER"}));
    let accept_url = format!("{}/api/drivers/trips/accept/{trip_id}", h.b());
    let (by_socket, (http_status, http_body)) = tokio::join!(
        near.ack("trip:offer:accept", json!({ "tripId": trip_id })),
        post(accept_url, &far_token, json!({}))
    );
    let socket_won = by_socket["ok"] == json!(true);
    let http_won = http_status == 200;
    assert!(socket_won ^ http_won, "exactly one winner: socket {by_socket}, http {http_status} {http_body}");
    let (winner, winner_token, mut winner_client, mut loser_client) =
        if socket_won { ("d-near", near_token, near, far) } else { ("d-far", far_token, far, near) };
    if socket_won {
        assert_eq!(by_socket["tripId"], json!(trip_id));
        assert_eq!(http_status, 409);
        assert_eq!(http_body["error"], json!("CONFLICT"));
    } else {
        assert_err(&by_socket, "CONFLICT");
        assert_eq!(http_body["driverId"], json!("d-far"));
    }
    let accepted = winner_client.expect("trip.offer.accepted", "winner").await;
    assert_eq!(accepted["tripId"], json!(trip_id));
    let (_, read) =
        call(reqwest::Method::GET, format!("{}/api/trips/{trip_id}", h.a()), Some(&passenger_token), None).await;
    assert_eq!((read["driverId"].as_str(), read["status"].as_str()), (Some(winner), Some("IN_PROGRESS")));
    let expired = loser_client.expect("trip.offer.expired", "loser").await;
    assert_eq!(expired["reason"], json!("TAKEN"));
    let update = passenger.expect("trip.status.updated", "passenger's user room").await;
    assert_eq!(update["previousStatus"], json!("PUBLISHED"));
    assert_eq!(update["newStatus"], json!("IN_PROGRESS"));
    assert_eq!(update["tripTitle"], json!("Airport run"));
    assert_eq!(update["originName"], json!("Central Station"));
    assert_eq!(update["destName"], json!("Airport"));

    // The winner drives; the passenger (other node) watches; each update arrives once
    // although the passenger is in the trip room and its own user room.
    assert_ok(&winner_client.ack("driver:connect", json!({ "tripId": trip_id })).await);
    assert_ok(&passenger.ack("passenger:subscribe", json!({ "tripId": trip_id })).await);
    passenger.drain();
    let status_url = format!("{}/api/drivers/trips/{trip_id}/status", h.a());
    for next in ["DEPARTED", "ARRIVED", "COMPLETED"] {
        let (status, t) = call(
            reqwest::Method::PUT,
            status_url.clone(),
            Some(&winner_token),
            Some(json!({ "status": next, "notes": "on time" })),
        )
        .await;
        assert_eq!(status, 200, "{t}");
        assert_eq!(t["status"], json!(next));
        let u = passenger.expect("trip.status.updated", "status update").await;
        assert_eq!(u["newStatus"], json!(next));
        assert_eq!(u["notes"], json!("on time"));
        assert!(u["eventId"].is_string());
    }
    assert!(passenger.next("trip.status.updated", Duration::from_millis(500)).await.is_none(), "delivered once");
    let (status, err) =
        call(reqwest::Method::PUT, status_url, Some(&winner_token), Some(json!({ "status": "DEPARTED" }))).await;
    assert_eq!((status, err["error"].as_str()), (409, Some("INVALID_TRANSITION")), "{err}");

    // Completion freed the driver: the next trip is offered to the winner again.
    winner_client.drain();
    let (status, second) =
        post(format!("{}/api/trips", h.a()), &token("biz", "BUSINESS"), trip_body("PRIVATE", 2, ORIGIN)).await;
    assert_eq!(status, 201);
    let offer = winner_client.expect("trip.offer.created", "freed driver").await;
    assert_eq!(offer["tripId"], second["id"]);
    h.stop().await;
}

async fn concurrent_bookings_never_oversell(mode: Mode) {
    let h = Harness::start(mode, &[]).await;
    let (status, trip) =
        post(format!("{}/api/trips", h.a()), &token("biz", "BUSINESS"), trip_body("SHARED", 5, ORIGIN)).await;
    assert_eq!(status, 201, "{trip}");
    let trip_id = trip["id"].as_str().expect("id").to_string();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let url = if i % 2 == 0 { h.a() } else { h.b() };
        let body = json!({ "tripId": trip_id, "seatsBooked": 1 });
        let t = token(&format!("p{i}"), "PASSENGER");
        tasks.push(tokio::spawn(async move { post(format!("{url}/api/bookings"), &t, body).await }));
    }
    let mut booked = Vec::new();
    for t in tasks {
        let (status, body) = t.await.expect("task");
        match status {
            201 => booked.push(body),
            409 => assert_eq!(body["error"], json!("NO_SEATS"), "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(booked.len(), 5, "exactly the seats there are");
    let mut seats: Vec<i64> = booked.iter().map(|b| b["seatNumber"].as_i64().expect("seat")).collect();
    seats.sort_unstable();
    assert_eq!(seats, vec![1, 2, 3, 4, 5]);
    let (_, read) =
        call(reqwest::Method::GET, format!("{}/api/trips/{trip_id}", h.b()), Some(&token("adm", "ADMIN")), None).await;
    assert_eq!(read["availableSeats"], json!(0));

    // Cancel returns the seats; a second cancel is a conflict.
    let first = &booked[0];
    let owner = token(first["passengerId"].as_str().expect("passenger"), "PASSENGER");
    let url = format!("{}/api/bookings/{}", h.a(), first["id"].as_str().expect("id"));
    let (status, b) =
        call(reqwest::Method::PATCH, url.clone(), Some(&owner), Some(json!({ "action": "cancel", "reason": "ill" })))
            .await;
    assert_eq!((status, b["status"].as_str()), (200, Some("CANCELLED")), "{b}");
    let (status, err) = call(reqwest::Method::PATCH, url, Some(&owner), Some(json!({ "action": "cancel" }))).await;
    assert_eq!((status, err["error"].as_str()), (409, Some("CONFLICT")));
    let cancel_url = format!("{}/api/passengers/bookings/{}/cancel", h.b(), first["id"].as_str().expect("id"));
    let (status, _) = call(reqwest::Method::POST, cancel_url, Some(&owner), None).await;
    assert_eq!(status, 409, "the shortcut agrees");
    let (_, read) =
        call(reqwest::Method::GET, format!("{}/api/trips/{trip_id}", h.b()), Some(&token("adm", "ADMIN")), None).await;
    assert_eq!(read["availableSeats"], json!(1));
    h.stop().await;
}

async fn bookings_and_cancellations_reach_watchers_and_leave_the_room(mode: Mode) {
    let h = Harness::start(mode, &[]).await;
    let biz = token("biz", "BUSINESS");
    let mut organizer = Client::connect(&h.a(), &biz).await;
    let (_, trip) = post(format!("{}/api/trips", h.a()), &biz, trip_body("SHARED", 4, ORIGIN)).await;
    let trip_id = trip["id"].as_str().expect("id").to_string();
    let p = sign(json!({"sub": "rider", "role": "PASSENGER", "name": "Rae"}));
    let (_, booking) =
        post(format!("{}/api/bookings", h.a()), &p, json!({ "tripId": trip_id, "seatsBooked": 3 })).await;
    let confirmed = organizer.expect("booking.confirmed", "organizer's user room").await;
    assert_eq!(confirmed["bookingId"], booking["id"]);
    assert_eq!(confirmed["passengerName"], json!("Rae"));
    assert_eq!((confirmed["seatsBooked"].as_i64(), confirmed["availableSeats"].as_i64()), (Some(3), Some(1)));
    assert_eq!(confirmed["totalSeats"], json!(4));
    assert_eq!(confirmed["tripType"], json!("SHARED"));
    let mut rider = Client::connect(&h.b(), &p).await;
    assert_ok(&rider.ack("passenger:subscribe", json!({ "tripId": trip_id })).await);
    let url = format!("{}/api/passengers/bookings/{}/cancel", h.a(), booking["id"].as_str().expect("id"));
    let (status, _) = post(url, &p, json!({ "reason": "plans changed" })).await;
    assert_eq!(status, 200);
    let cancelled = organizer.expect("booking.cancelled", "organizer").await;
    assert_eq!((cancelled["seatsFreed"].as_i64(), cancelled["availableSeats"].as_i64()), (Some(3), Some(4)));
    assert_eq!(cancelled["reason"], json!("plans changed"));
    let seen = rider.expect("booking.cancelled", "the rider, still in the room").await;
    assert_eq!(seen["bookingId"], booking["id"]);
    // The rider's socket left the trip room: a later trip event does not reach it, and its
    // subscription slot is free (a new subscribe needs a booking again).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, b2) = post(
        format!("{}/api/bookings", h.a()),
        &token("other", "PASSENGER"),
        json!({ "tripId": trip_id, "seatsBooked": 1 }),
    )
    .await;
    assert_eq!(b2["status"], json!("PENDING"));
    organizer.expect("booking.confirmed", "organizer").await;
    assert!(rider.next("booking.confirmed", Duration::from_millis(500)).await.is_none(), "rider left the trip room");
    assert_err(&rider.ack("passenger:subscribe", json!({ "tripId": trip_id })).await, "FORBIDDEN");
    h.stop().await;
}

async fn conductors_board_a_ticket_once(mode: Mode) {
    let h = Harness::start(mode, &[]).await;
    let trip = unique("t");
    h.insert_trip("default", &trip, Some("drv")).await;
    let p = sign(json!({"sub": "pax", "role": "PASSENGER", "name": "Pia"}));
    let (status, booking) =
        post(format!("{}/api/bookings", h.a()), &p, json!({ "tripId": trip, "seatsBooked": 1, "dropPoint": "Depot" }))
            .await;
    assert_eq!(status, 201, "{booking}");
    assert_eq!(booking["status"], json!("CONFIRMED"), "the trip has a driver");
    let ticket = booking["ticketToken"].as_str().expect("ticket").to_string();
    let conductor = Client::connect(&h.b(), &token("cond", "CONDUCTOR")).await;
    let first = conductor.ack("conductor:scan", json!({ "token": ticket })).await;
    assert_ok(&first);
    assert_eq!(first["valid"], json!(true), "{first}");
    assert_eq!(first["status"], json!("BOARDED"));
    assert_eq!(first["passengerName"], json!("Pia"));
    assert_eq!(first["bookingId"], booking["id"]);
    assert_eq!(first["referenceCode"], booking["referenceCode"]);
    assert_eq!(first["seatNumber"], json!(1));
    assert_eq!(first["dropPoint"], json!("Depot"));
    let again = conductor.ack("conductor:scan", json!({ "token": ticket })).await;
    assert_eq!((again["valid"].as_bool(), again["status"].as_str()), (Some(false), Some("BOARDED")), "{again}");
    assert!(again["message"].as_str().is_some_and(|m| m.contains("already boarded")));
    let mut forged = ticket.clone();
    forged.replace_range(forged.len() - 4.., "AAAA");
    let f = conductor.ack("conductor:scan", json!({ "token": forged })).await;
    assert_eq!(f["valid"], json!(false));
    let foreign = Client::connect(&h.b(), &sign(json!({"sub": "c2", "role": "CONDUCTOR", "tenant": "other"}))).await;
    let f = foreign.ack("conductor:scan", json!({ "token": ticket })).await;
    assert_eq!(f["valid"], json!(false), "another tenant's ticket");
    assert!(f.get("bookingId").is_none(), "nothing of another tenant leaks: {f}");
    // A PENDING booking (no driver yet) is not boardable.
    let pending_trip = unique("t");
    h.insert_trip("default", &pending_trip, None).await;
    let (_, pending) =
        post(format!("{}/api/bookings", h.a()), &p, json!({ "tripId": pending_trip, "seatsBooked": 1 })).await;
    let r = conductor.ack("conductor:scan", json!({ "token": pending["ticketToken"] })).await;
    assert_eq!((r["valid"].as_bool(), r["status"].as_str()), (Some(false), Some("PENDING")), "{r}");
    assert_err(&conductor.ack("conductor:scan", json!({})).await, "INVALID_PAYLOAD");
    let passenger = Client::connect(&h.a(), &p).await;
    assert_err(&passenger.ack("conductor:scan", json!({ "token": ticket })).await, "FORBIDDEN");
    h.stop().await;
}

async fn unanswered_offers_expire_and_go_wider(mode: Mode) {
    let h =
        Harness::start(mode, &["--offer-deadline-ms", "2000", "--offer-radius-km", "1", "--offer-rounds", "1"]).await;
    let mut near = driver_at(&h.a(), "n1", ORIGIN, 0.5, json!({})).await;
    let mut decliner = driver_at(&h.b(), "n2", ORIGIN, 0.7, json!({})).await;
    let mut wide = driver_at(&h.b(), "w1", ORIGIN, 1.5, json!({})).await;
    let mut picky = driver_at(&h.a(), "w2", ORIGIN, 1.6, json!({ "minEarnings": 1000 })).await;
    let (_, trip) =
        post(format!("{}/api/trips", h.a()), &token("p", "PASSENGER"), trip_body("PRIVATE", 1, ORIGIN)).await;
    let trip_id = trip["id"].clone();
    near.expect("trip.offer.created", "round 0").await;
    decliner.expect("trip.offer.created", "round 0").await;
    assert_ok(&decliner.ack("trip:offer:decline", json!({ "tripId": trip_id })).await);
    assert!(wide.next("trip.offer.created", Duration::from_millis(500)).await.is_none(), "outside round 0");
    let expired = near.next("trip.offer.expired", Duration::from_secs(8)).await.expect("deadline");
    assert_eq!(expired["reason"], json!("DEADLINE"));
    let offer = wide.next("trip.offer.created", Duration::from_secs(8)).await.expect("round 1, doubled radius");
    assert_eq!(offer["tripId"], trip_id);
    assert!(picky.next("trip.offer.created", Duration::from_millis(300)).await.is_none(), "minEarnings filter");
    assert!(decliner.next("trip.offer.created", Duration::from_millis(300)).await.is_none(), "declined");
    assert!(near.next("trip.offer.created", Duration::from_millis(300)).await.is_none(), "offered once");
    // A driver whose offer expired cannot accept any more.
    assert_err(&near.ack("trip:offer:accept", json!({ "tripId": trip_id })).await, "CONFLICT");
    assert_err(&decliner.ack("trip:offer:accept", json!({ "tripId": trip_id })).await, "FORBIDDEN");
    assert_ok(&wide.ack("trip:offer:accept", json!({ "tripId": trip_id })).await);
    h.stop().await;
}

/// Offers go to the nearest drivers at their latest positions, even where the geo index
/// holds older ones (a Redis Cluster re-indexes a driver that stays in its geo cell only past
/// 50 m): a driver indexed nearest that then moved 40 m away is passed over for one now nearer.
async fn offers_rank_drivers_at_their_latest_positions(mode: Mode) {
    let h = Harness::start(mode, &["--offer-max-drivers", "1", "--location-min-interval-ms", "0"]).await;
    let (moved_id, still_id) = (unique("moved"), unique("still"));
    let mut moved = driver_at(&h.a(), &moved_id, ORIGIN, 1.0, json!({})).await;
    let mut still = driver_at(&h.b(), &still_id, ORIGIN, 1.02, json!({})).await;
    let lat = ORIGIN.0 + 1.04 / 111.195;
    assert_ok(&moved.ack("driver:location:update", json!({ "lat": lat, "lng": ORIGIN.1 })).await);
    let (status, trip) =
        post(format!("{}/api/trips", h.a()), &token("p", "PASSENGER"), trip_body("PRIVATE", 1, ORIGIN)).await;
    assert_eq!(status, 201, "{trip}");
    let offer = still.expect("trip.offer.created", "the nearest driver now").await;
    assert_eq!(offer["tripId"], trip["id"]);
    let km = offer["distanceKm"].as_f64().expect("distanceKm");
    assert!((km - 1.02).abs() < 0.005, "{offer}");
    assert!(moved.next("trip.offer.created", Duration::from_millis(500)).await.is_none(), "now second nearest");
    h.stop().await;
}

/// Role × action × ownership over the HTTP routes and the ride events; tenants never mix.
async fn every_route_checks_role_ownership_and_tenant(mode: Mode) {
    let h = Harness::start(mode, &[]).await;
    let a = h.a();
    let organizer = token("org", "PASSENGER");
    let (_, trip) = post(format!("{a}/api/trips"), &organizer, trip_body("PRIVATE", 2, ORIGIN)).await;
    let id = trip["id"].as_str().expect("id").to_string();
    let (_, booking) =
        post(format!("{a}/api/bookings"), &token("rider", "PASSENGER"), json!({ "tripId": id, "seatsBooked": 1 }))
            .await;
    let bid = booking["id"].as_str().expect("booking").to_string();
    let other_tenant = sign(json!({"sub": "adm", "role": "ADMIN", "tenant": "elsewhere"}));
    use reqwest::Method as M;
    let cases: Vec<(M, String, String, Option<Value>, u16)> = vec![
        // create
        (M::POST, "/api/trips".into(), token("p", "PASSENGER"), Some(trip_body("SHARED", 2, ORIGIN)), 403),
        (M::POST, "/api/trips".into(), token("d", "DRIVER"), Some(trip_body("PRIVATE", 2, ORIGIN)), 403),
        (M::POST, "/api/trips".into(), token("c", "CONDUCTOR"), Some(trip_body("PRIVATE", 2, ORIGIN)), 403),
        (M::POST, "/api/trips".into(), token("s", "SERVICE"), Some(trip_body("SHARED", 2, ORIGIN)), 201),
        (M::POST, "/api/trips".into(), token("p", "PASSENGER"), Some(json!({ "title": "x" })), 400),
        (M::POST, "/api/trips".into(), token("b", "BUSINESS"), Some(trip_body("BUS", 2, ORIGIN)), 400),
        // read
        (M::GET, format!("/api/trips/{id}"), organizer.clone(), None, 200),
        (M::GET, format!("/api/trips/{id}"), token("rider", "PASSENGER"), None, 200),
        (M::GET, format!("/api/trips/{id}"), token("stranger", "PASSENGER"), None, 403),
        (M::GET, format!("/api/trips/{id}"), token("d", "DRIVER"), None, 403),
        (M::GET, format!("/api/trips/{id}"), token("b", "BUSINESS"), None, 200),
        (M::GET, format!("/api/trips/{id}"), other_tenant.clone(), None, 404),
        (M::GET, "/api/trips/nope".into(), token("b", "BUSINESS"), None, 404),
        // status
        (
            M::PUT,
            format!("/api/drivers/trips/{id}/status"),
            token("d", "DRIVER"),
            Some(json!({"status": "DEPARTED"})),
            403,
        ),
        (
            M::PUT,
            format!("/api/drivers/trips/{id}/status"),
            organizer.clone(),
            Some(json!({"status": "CANCELLED"})),
            403,
        ),
        (
            M::PUT,
            format!("/api/drivers/trips/{id}/status"),
            token("adm", "ADMIN"),
            Some(json!({"status": "FLYING"})),
            400,
        ),
        (
            M::PUT,
            format!("/api/drivers/trips/{id}/status"),
            token("adm", "ADMIN"),
            Some(json!({"status": "DEPARTED"})),
            409,
        ),
        (
            M::PUT,
            format!("/api/drivers/trips/{id}/status"),
            other_tenant.clone(),
            Some(json!({"status": "CANCELLED"})),
            404,
        ),
        // book
        (M::POST, "/api/bookings".into(), token("d", "DRIVER"), Some(json!({"tripId": id, "seatsBooked": 1})), 403),
        (
            M::POST,
            "/api/bookings".into(),
            token("p", "PASSENGER"),
            Some(json!({"tripId": "nope", "seatsBooked": 1})),
            404,
        ),
        (M::POST, "/api/bookings".into(), token("p", "PASSENGER"), Some(json!({"tripId": id, "seatsBooked": 0})), 400),
        (M::POST, "/api/bookings".into(), token("p", "PASSENGER"), Some(json!({"tripId": id, "seatsBooked": 9})), 409),
        (
            M::POST,
            "/api/bookings".into(),
            sign(json!({"sub": "p", "role": "PASSENGER", "tenant": "elsewhere"})),
            Some(json!({"tripId": id, "seatsBooked": 1})),
            404,
        ),
        // cancel
        (
            M::PATCH,
            format!("/api/bookings/{bid}"),
            token("stranger", "PASSENGER"),
            Some(json!({"action": "cancel"})),
            403,
        ),
        (M::PATCH, format!("/api/bookings/{bid}"), token("d", "DRIVER"), Some(json!({"action": "cancel"})), 403),
        (M::PATCH, format!("/api/bookings/{bid}"), token("rider", "PASSENGER"), Some(json!({"action": "refund"})), 400),
        (M::POST, format!("/api/passengers/bookings/{bid}/cancel"), other_tenant.clone(), None, 404),
        // offers
        (M::POST, format!("/api/trips/{id}/broadcast-offer"), token("stranger", "PASSENGER"), None, 403),
        (M::POST, format!("/api/trips/{id}/broadcast-offer"), token("d", "DRIVER"), None, 403),
        (M::POST, format!("/api/trips/{id}/broadcast-offer"), organizer.clone(), None, 200),
        (M::POST, format!("/api/trips/{id}/broadcast-offer"), token("s", "SERVICE"), None, 200),
        (M::POST, format!("/api/drivers/trips/accept/{id}"), token("d", "DRIVER"), None, 403),
        (M::POST, format!("/api/drivers/trips/accept/{id}"), organizer.clone(), None, 403),
        (M::POST, "/api/drivers/trips/accept/nope".into(), token("d", "DRIVER"), None, 404),
        // cancel last: ADMIN may cancel any booking of the tenant
        (M::PATCH, format!("/api/bookings/{bid}"), token("adm", "ADMIN"), Some(json!({"action": "cancel"})), 200),
    ];
    for (method, path, tok, body, want) in cases {
        let (status, resp) = call(method.clone(), format!("{a}{path}"), Some(&tok), body).await;
        assert_eq!(status, want, "{method} {path}: {resp}");
        if status >= 400 {
            assert!(resp["error"].is_string() && resp["message"].is_string(), "{method} {path}: {resp}");
        }
    }
    let (status, err) = call(M::GET, format!("{a}/api/trips/{id}"), None, None).await;
    assert_eq!((status, err["error"].as_str()), (401, Some("NO_TOKEN")));
    // Socket events of the ride flow.
    let p = Client::connect(&h.b(), &token("p", "PASSENGER")).await;
    assert_err(&p.ack("driver:subscribe", json!({})).await, "FORBIDDEN");
    assert_err(&p.ack("trip:offer:accept", json!({ "tripId": id })).await, "FORBIDDEN");
    assert_err(&p.ack("trip:offer:decline", json!({ "tripId": id })).await, "FORBIDDEN");
    let d = Client::connect(&h.b(), &token("d", "DRIVER")).await;
    assert_err(&d.ack("driver:subscribe", json!({ "filters": { "maxDistance": -1 } })).await, "INVALID_PAYLOAD");
    assert_err(&d.ack("driver:subscribe", json!({ "filters": { "tripTypes": ["BUS"] } })).await, "INVALID_PAYLOAD");
    assert_ok(&d.ack_raw("driver:subscribe", None).await);
    assert_ok(&d.ack("driver:unsubscribe", json!({})).await);
    assert_err(&d.ack("trip:offer:accept", json!({})).await, "INVALID_PAYLOAD");
    assert_err(&d.ack("trip:offer:accept", json!({ "tripId": "nope" })).await, "NOT_FOUND");
    assert_err(&d.ack("trip:offer:decline", json!({ "tripId": "nope" })).await, "NOT_FOUND");
    let foreign = Client::connect(&h.b(), &sign(json!({"sub": "d", "role": "DRIVER", "tenant": "elsewhere"}))).await;
    assert_err(&foreign.ack("trip:offer:accept", json!({ "tripId": id })).await, "NOT_FOUND");
    h.stop().await;
}

/// Matching over 1,000 drivers: the nearest eligible ones, in order, skipping drivers who
/// are not subscribed on a live socket, whose filters refuse the trip, or who are busy.
async fn offer_matching_ranks_a_thousand_drivers(mode: Mode) {
    use fleetcast::domain::{Tenant, UserId};
    use fleetcast::engine::SlotKind;
    let h = Harness::start(mode, &["--offer-max-drivers", "25", "--offer-radius-km", "20"]).await;
    let app = &h.nodes[0].app;
    let tenant = Tenant(unique("tn"));
    let (_, trip) = post(
        format!("{}/api/trips", h.a()),
        &sign(json!({"sub": "b", "role": "BUSINESS", "tenant": tenant.0})),
        trip_body("SHARED", 4, ORIGIN),
    )
    .await;
    let trip_id = trip["id"].as_str().expect("id").to_string();
    let row = app.db.get_trip(&tenant, &trip_id).await.expect("read").expect("trip");
    let mut expected = Vec::new();
    for i in 0..1_000u32 {
        let driver = UserId(format!("drv{i:04}"));
        // Spread over 0–40 km in a pseudo-random order, on a ring of bearings.
        let km = f64::from((i * 7919) % 1_000) * 0.04 + 0.01;
        let bearing = f64::from(i % 36).to_radians() * 10.0;
        let lat = ORIGIN.0 + km / 111.195 * bearing.cos();
        let lng = ORIGIN.1 + km / (111.195 * ORIGIN.0.to_radians().cos()) * bearing.sin();
        let fix = fleetcast::domain::Location {
            trip: None,
            driver: driver.clone(),
            lat,
            lng,
            speed: None,
            heading: None,
            accuracy: None,
            updated_at: fleetcast::domain::now_iso(),
        };
        let room = fleetcast::domain::RoomKey::driver_location(&tenant, &driver);
        let frame = fleetcast::engine::frame::encode("driver_location", 1, None, "{}");
        // Stored as the location path stores it (a Redis Cluster's offer search reads it).
        let json = serde_json::to_string(&fix).expect("location JSON");
        let w = fleetcast::engine::LocationWrite {
            tenant: &tenant,
            fix: &fix,
            location_json: &json,
            publish: None,
            driver_room: (&room, &frame),
            cell: fleetcast::domain::area::Cell::of(lat, lng),
        };
        let limits = fleetcast::engine::LocationLimits {
            min_interval_ms: 0,
            max_per_minute: 100,
            ttl_ms: 120_000,
            snapshot_interval_ms: 30_000,
        };
        app.engine.write_location(w, &limits).await.expect("location");
        let filters = match i % 10 {
            3 => json!({ "tripTypes": ["PRIVATE"] }),
            4 => json!({ "maxDistance": 1.0 }),
            _ => json!({}),
        };
        app.engine.set_offer_filters(&tenant, &driver, &filters.to_string()).await.expect("filters");
        let subscribed = i % 10 != 5;
        if subscribed {
            let sid = format!("sock{i}");
            app.engine.claim(SlotKind::Offers, &tenant, &driver, &sid, &[&sid], u32::MAX).await.expect("claim");
        }
        let d = fleetcast::domain::rides::haversine_km(ORIGIN, (lat, lng));
        let admitted = match i % 10 {
            3 | 5 => false,
            4 => d <= 1.0,
            _ => d <= 20.0,
        };
        if admitted {
            expected.push((d, driver.0.clone()));
        }
    }
    expected.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    let got = fleetcast::flows::offers::eligible(app, &tenant, &row, 0).await.expect("eligible");
    let got_ids: Vec<&str> = got.iter().map(|(d, _)| d.as_str()).collect();
    let want: Vec<&str> = expected.iter().take(25).map(|(_, d)| d.as_str()).collect();
    assert_eq!(got_ids, want, "nearest eligible first");
    for ((_, got_km), (want_km, _)) in got.iter().zip(&expected) {
        assert!((got_km - want_km).abs() < 0.005, "GEO precision is below a metre");
    }
    h.stop().await;
}

/// The same trip id in two tenants: two trips that never mix (seats, status, events).
async fn equal_ids_in_two_tenants_never_mix(mode: Mode) {
    let h = Harness::start(mode, &[]).await;
    let trip = unique("same");
    h.insert_trip("ta", &trip, Some("drv")).await;
    h.insert_trip("tb", &trip, Some("drv")).await;
    let pa = sign(json!({"sub": "pax", "role": "PASSENGER", "tenant": "ta"}));
    let pb = sign(json!({"sub": "pax", "role": "PASSENGER", "tenant": "tb"}));
    let (status, _) = post(format!("{}/api/bookings", h.a()), &pa, json!({ "tripId": trip, "seatsBooked": 4 })).await;
    assert_eq!(status, 201);
    let (status, _) = post(format!("{}/api/bookings", h.a()), &pb, json!({ "tripId": trip, "seatsBooked": 1 })).await;
    assert_eq!(status, 201);
    let mut watcher_b = Client::connect(&h.b(), &pb).await;
    assert_ok(&watcher_b.ack("passenger:subscribe", json!({ "tripId": trip })).await);
    let admin_a = sign(json!({"sub": "adm", "role": "ADMIN", "tenant": "ta"}));
    let (status, t) = call(
        reqwest::Method::PUT,
        format!("{}/api/drivers/trips/{trip}/status", h.a()),
        Some(&admin_a),
        Some(json!({ "status": "CANCELLED" })),
    )
    .await;
    assert_eq!((status, t["availableSeats"].as_i64()), (200, Some(6)), "{t}");
    assert!(watcher_b.next("trip.status.updated", Duration::from_millis(700)).await.is_none(), "tenant b saw nothing");
    let admin_b = sign(json!({"sub": "adm", "role": "ADMIN", "tenant": "tb"}));
    let (_, tb) = call(reqwest::Method::GET, format!("{}/api/trips/{trip}", h.b()), Some(&admin_b), None).await;
    assert_eq!((tb["status"].as_str(), tb["availableSeats"].as_i64()), (Some("PUBLISHED"), Some(9)), "{tb}");
    h.stop().await;
}

/// A trip near a pole is a trip: Redis's GEO search ends at ±85.05°, and its offer search
/// must not fail there (found by the socket fuzzer).
async fn trips_near_the_poles_are_created_and_offered(mode: Mode) {
    let h = Harness::start(mode, &[]).await;
    let _driver = driver_at(&h.a(), "d-polar", (89.5, 10.0), 1.0, json!({})).await;
    let organizer = sign(json!({"sub": "p-polar", "role": "PASSENGER", "name": "Amundsen"}));
    let (status, trip) = post(format!("{}/api/trips", h.a()), &organizer, trip_body("PRIVATE", 2, (89.5, 10.0))).await;
    assert_eq!(status, 201, "{trip}");
    let id = trip["id"].as_str().expect("id");
    let r = reqwest::Client::new()
        .post(format!("{}/api/trips/{id}/broadcast-offer", h.a()))
        .bearer_auth(&organizer)
        .send()
        .await
        .expect("broadcast");
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    h.stop().await;
}

both_modes!(
    offers_rank_drivers_at_their_latest_positions,
    trips_near_the_poles_are_created_and_offered,
    equal_ids_in_two_tenants_never_mix,
    the_ride_flow_runs_end_to_end,
    concurrent_bookings_never_oversell,
    bookings_and_cancellations_reach_watchers_and_leave_the_room,
    conductors_board_a_ticket_once,
    unanswered_offers_expire_and_go_wider,
    every_route_checks_role_ownership_and_tenant,
    offer_matching_ranks_a_thousand_drivers,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_the_api() {
    let h = Harness::start(Mode::Embedded, &[]).await;
    let (status, doc) = call(reqwest::Method::GET, format!("{}/api/openapi.json", h.a()), None, None).await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "{doc}");
    // The document and the router's route tables describe the same routes: every route the
    // node serves (but the document itself) is documented with its method, and every
    // documented operation is served. Path parameters are compared by position.
    let shape =
        |p: &str| p.split('/').map(|seg| if seg.starts_with('{') { "{}" } else { seg }).collect::<Vec<_>>().join("/");
    let served: std::collections::BTreeSet<(String, String)> = fleetcast::http::ROUTES
        .iter()
        .chain(fleetcast::sse::ROUTES)
        .filter(|(_, p)| *p != "/api/openapi.json")
        .map(|(m, p)| (m.to_lowercase(), shape(p)))
        .collect();
    let mut documented = std::collections::BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        for method in ops.as_object().expect("operations").keys() {
            documented.insert((method.clone(), shape(path)));
        }
    }
    assert_eq!(documented, served, "the OpenAPI document and the route tables differ");
    assert!(doc["components"]["schemas"]["Trip"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    // The router is built from those tables: a documented route answers, an unknown one is
    // the JSON 404.
    let (status, _) = call(reqwest::Method::GET, format!("{}/api/trips/x", h.a()), None, None).await;
    assert_eq!(status, 401, "served (asks for a token)");
    let (status, body) = call(reqwest::Method::GET, format!("{}/api/nope", h.a()), None, None).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("NOT_FOUND")));
    h.stop().await;
}
