-- Schema 7: alerts for one chat, and reminder lead times per chat.
-- A scheduled report (a buyback summary at the chat's own hour, a milestone at the chat's own step, a notice
-- that an event a chat was reminded of moved) is for one chat only: `audience` names it, and the log's read
-- skips it for every other chat. NULL: everyone whose subscriptions match, as before.
ALTER TABLE events ADD COLUMN audience INTEGER;
-- Reminder lead times a chat hears (unlock and TGE reminders are stored once per lead time, `level` '7d',
-- '24h', '1h'), comma-separated, set with /leads; the distance steps stay in distance_warnings.
ALTER TABLE chats ADD COLUMN reminder_leads TEXT NOT NULL DEFAULT '7d,24h,1h';
