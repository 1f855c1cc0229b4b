// Welcomes new users, in JavaScript: the `user.created` -> `notification.email` flow
// of the Rust `user-notifications`, against the same `techub:platform/plugin` world.
//
// On `user.created` it caches the user's profile in the `users` domain (tagged with
// the user), counts the welcome in its store, and publishes a `notification.email`
// asking for the welcome email, correlated with the event. A payload without a usable
// id or email is rejected (dead-lettered); a backend that is down is a retry.
//
// Imports are synchronous (componentize-js calls them so); an import's error is
// thrown, with the WIT error as its `payload`.

import * as cache from "techub:platform/cache@0.1.0";
import * as config from "techub:platform/config@0.1.0";
import * as log from "techub:platform/log@0.1.0";
import * as messaging from "techub:platform/messaging@0.1.0";
import * as store from "techub:platform/store@0.1.0";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function welcome(message, user) {
  cache.set("users", user.id, encoder.encode(JSON.stringify(user)), {
    ttlSeconds: undefined,
    tags: [`user:${user.id}`],
    priority: "medium",
  });
  const welcomed = store.incrBy("welcomed", 1n);
  const email = {
    template: "welcome",
    to: user.email,
    from: config.get("sender") ?? "noreply@techub.example",
    name: user.name ?? "",
    user_id: user.id,
  };
  const published = messaging.publish(
    "notification.email",
    encoder.encode(JSON.stringify(email)),
    {
      priority: undefined,
      persistent: true,
      expirationMs: undefined,
      delayMs: undefined,
      correlationId: message.correlationId ?? message.id,
      replyTo: undefined,
      headers: [],
      messageId: undefined,
    },
  );
  log.write("info", "welcome email requested", [
    ["user", user.id],
    ["message", published],
    ["welcomed", welcomed.toString()],
  ]);
}

export const handler = {
  subscriptions() {
    return [
      {
        queue: "notification",
        routingKeys: ["user.created"],
        publishes: ["notification.email"],
      },
    ];
  },

  handle(message) {
    let user;
    try {
      user = JSON.parse(decoder.decode(message.payload));
    } catch (error) {
      return { tag: "reject", val: `payload is not JSON: ${error}` };
    }
    if (user === null || typeof user !== "object") {
      return { tag: "reject", val: "payload is not a JSON object" };
    }
    if (typeof user.id !== "string" || !user.id || !String(user.email).includes("@")) {
      return { tag: "reject", val: `user ${JSON.stringify(user.id)} has no usable id or email` };
    }
    try {
      welcome(message, user);
    } catch (error) {
      // A typed error of an import: the backend or a quota; try again later.
      const why = error.payload ? JSON.stringify(error.payload) : String(error);
      return { tag: "retry", val: why };
    }
    return { tag: "ok" };
  },
};
