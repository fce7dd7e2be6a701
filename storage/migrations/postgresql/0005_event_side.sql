-- Schema 5: the side an event is about (a liquidated position's side), as a column, so `/liqs` sums a
-- window by venue and side in the database instead of decoding every body of the window.
ALTER TABLE events ADD COLUMN side TEXT;
UPDATE events SET side = (body::json -> 'body' ->> 'side') WHERE topic = 'liquidation';
