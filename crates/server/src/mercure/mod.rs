//! The Mercure door (`/.well-known/mercure`): Mercure's protocol, 0.x and 1.0, over Herald's hub.

pub mod token;
