-- Schema 6: liquidation-distance warnings at each chat's own steps. A distance warning is stored once per
-- step crossed (`level`, the step in percent: '10', '7.5'); a chat hears the steps in its list
-- (`distance_warnings`, comma-separated percents, set with /distance).
ALTER TABLE events ADD COLUMN level TEXT;
ALTER TABLE chats ADD COLUMN distance_warnings TEXT NOT NULL DEFAULT '10,5,2';
