//! Welcomes new users (the seed's `user.created` → `notification.email` flow).
//!
//! On `user.created` it caches the user's profile in the `users` domain, tagged with
//! the user, and publishes a `notification.email` asking for the welcome email,
//! correlated with the event. The sender address is a setting in `host.toml`.

use techub_guest::events::{self, EmailRequest, UserCreated};
use techub_guest::prelude::*;

#[handler(
    queue = "notification",
    routing_keys = ["user.created"],
    publishes = ["notification.email"]
)]
fn welcome(message: Message) -> Result<(), Failure> {
    let user: UserCreated = message.json()?;
    if user.id.is_empty() || !user.email.contains('@') {
        return Err(Failure::reject(format!(
            "user {:?} has no usable id or email",
            user.id
        )));
    }
    let options = EntryOptions::default().tag(format!("user:{}", user.id));
    cache::set_json(Domain::USERS, &user.id, &user, &options)?;

    let email = EmailRequest {
        template: "welcome".into(),
        to: user.email.clone(),
        from: config::get_or("sender", "noreply@techub.example"),
        name: user.name.clone(),
        user_id: Some(user.id.clone()),
    };
    let id = messaging::publish_json(
        events::NOTIFICATION_EMAIL,
        &email,
        &PublishOptions::default().follows(&message),
    )?;
    log::info_with(
        "welcome email requested",
        &[("user", &user.id), ("message", &id)],
    );
    Ok(())
}
