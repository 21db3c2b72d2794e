//! Chat rooms (CONTRACT §2 `chat:typing`, `chat:read`): a member of `chat:{id}` tells the
//! room it types (volatile, not to itself) or read a message (recoverable).

use crate::app::App;
use crate::auth::Claims;
use crate::domain::RoomKey;
use crate::error::Result;
use crate::events::{MessageRead, Typing};
use crate::fanout;

/// `typing` to the chat room, except the sending socket.
pub async fn typing(app: &App, who: &Claims, room: &RoomKey, chat_id: &str, is_typing: bool, sid: &str) -> Result<()> {
    let event = Typing { chat_id, user_id: &who.user.0, is_typing };
    fanout::publish_volatile_except_socket(&app.engine, room, &event, sid).await
}

/// `message.read` to the chat room.
pub async fn read(app: &App, who: &Claims, room: &RoomKey, chat_id: &str, message_id: &str) -> Result<()> {
    let now = crate::domain::now_iso();
    let event = MessageRead { chat_id, message_id, user_id: &who.user.0, read_at: &now };
    fanout::publish(&app.engine, room, &event).await.map(|_| ())
}
