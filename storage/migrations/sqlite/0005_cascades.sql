-- Schema 5: cascades and /liqs. The side an event is about (a liquidated position's side), as a column, so `/liqs` sums a
-- window by venue and side in the database instead of decoding every body of the window.
ALTER TABLE events ADD COLUMN side TEXT;
UPDATE events SET side = json_extract(body, '$.body.side') WHERE topic = 'liquidation';

-- A liquidation carried by a cascade: chats that take that cascade hear it there, not on its own.
-- fold_usd_cents is the cascade's total once this liquidation was in it, compared with a chat's minimum.
ALTER TABLE events ADD COLUMN fold_thread TEXT;
ALTER TABLE events ADD COLUMN fold_usd_cents INTEGER;
