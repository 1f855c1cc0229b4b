//! A linked component and the exports it has: the handler it consumes messages with
//! (techub's `handler`, or the standard `wasmcloud:messaging/handler`), and the
//! `loader` only some have. Looked up once at load, per component, so that one host
//! links every world and no caller switches on which it got.

use super::state::PluginState;
use crate::capability::bindings::exports::techub::platform::{handler, loader};
use crate::capability::bindings::{Delivery, Outcome, Subscription};
use wasmtime::Store;
use wasmtime::component::{Instance, InstancePre};

/// `wasmcloud:messaging@0.2.0`'s `handler` export: a consumer written for wasmCloud.
mod wasmcloud {
    wasmtime::component::bindgen!({
        path: "../wit/standard/wasmcloud-messaging-0.2.0",
        world: "wasmcloud:messaging/messaging-handler",
        exports: { default: async },
    });
}

use wasmcloud::exports::wasmcloud::messaging::handler as wasmcloud_handler;
use wasmcloud::wasmcloud::messaging::types::BrokerMessage;

/// The export a component consumes messages with.
#[derive(Clone)]
enum Consumer {
    /// `techub:platform/handler`: it names its own subscriptions.
    Techub(handler::GuestIndices),
    /// `wasmcloud:messaging/handler`: `host.toml` names its subscription
    /// (`[plugins.<name>] queue` and `subscribe`). Chosen over `wasi:messaging`'s
    /// `incoming-handler` because it is the one components are built against today
    /// (wasmCloud's providers serve it; `wasi:messaging@0.2.0-draft` reused its version
    /// string for a second, still-moving shape).
    Wasmcloud(wasmcloud_handler::GuestIndices),
}

/// A component ready to instantiate, once per call.
#[derive(Clone)]
pub struct ComponentPre {
    instance_pre: InstancePre<PluginState>,
    consumer: Consumer,
    loader: Option<loader::GuestIndices>,
}

impl ComponentPre {
    /// The exports of a linked component; `Err` with wasmtime's reason (about
    /// techub's `handler`) when it has neither handler.
    pub(crate) fn new(instance_pre: InstancePre<PluginState>) -> wasmtime::Result<Self> {
        let consumer = match handler::GuestIndices::new(&instance_pre) {
            Ok(techub) => Consumer::Techub(techub),
            Err(missing) => match wasmcloud_handler::GuestIndices::new(&instance_pre) {
                Ok(wasmcloud) => Consumer::Wasmcloud(wasmcloud),
                Err(_) => return Err(missing.context(
                    "it exports neither techub:platform/handler nor wasmcloud:messaging/handler@0.2.0",
                )),
            },
        };
        let loader = loader::GuestIndices::new(&instance_pre).ok();
        Ok(Self {
            instance_pre,
            consumer,
            loader,
        })
    }

    /// Whether the component exports `loader`.
    pub fn has_loader(&self) -> bool {
        self.loader.is_some()
    }

    /// Whether `host.toml` names its subscription (a standard consumer) instead of
    /// the component.
    pub fn subscribes_in_config(&self) -> bool {
        matches!(self.consumer, Consumer::Wasmcloud(_))
    }

    pub(crate) fn instance_pre(&self) -> &InstancePre<PluginState> {
        &self.instance_pre
    }

    /// Hands `delivery` to the component's handler. A standard handler's `ok` is
    /// techub's `ok`, and its error a `retry` (the queue type's retries, then the dead
    /// letter, with the error as the reason).
    pub(crate) async fn handle(
        &self,
        store: &mut Store<PluginState>,
        instance: &Instance,
        delivery: &Delivery,
    ) -> wasmtime::Result<Outcome> {
        match &self.consumer {
            Consumer::Techub(indices) => {
                let handler = indices.load(&mut *store, instance)?;
                handler.call_handle(store, delivery).await
            }
            Consumer::Wasmcloud(indices) => {
                let handler = indices.load(&mut *store, instance)?;
                let message = BrokerMessage {
                    subject: delivery.routing_key.clone(),
                    body: delivery.payload.clone(),
                    reply_to: delivery.reply_to.clone(),
                };
                Ok(match handler.call_handle_message(store, &message).await? {
                    Ok(()) => Outcome::Ok,
                    Err(reason) => Outcome::Retry(reason),
                })
            }
        }
    }

    /// The subscriptions the component names (`None` for a standard consumer, whose
    /// subscription is in `host.toml`).
    pub(crate) async fn subscriptions(
        &self,
        store: &mut Store<PluginState>,
        instance: &Instance,
    ) -> wasmtime::Result<Option<Vec<Subscription>>> {
        match &self.consumer {
            Consumer::Techub(indices) => {
                let handler = indices.load(&mut *store, instance)?;
                Ok(Some(handler.call_subscriptions(store).await?))
            }
            Consumer::Wasmcloud(_) => Ok(None),
        }
    }

    /// The `loader` export of an instance of this component, if it has one.
    pub(crate) fn loader(
        &self,
        store: &mut Store<PluginState>,
        instance: &Instance,
    ) -> wasmtime::Result<Option<loader::Guest>> {
        self.loader
            .as_ref()
            .map(|indices| indices.load(store, instance))
            .transpose()
    }
}
