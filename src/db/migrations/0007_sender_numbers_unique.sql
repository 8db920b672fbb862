-- A phone number belongs to one workspace: inbound texts (STOP, HELP) are
-- routed by the number they were sent to, so a number shared by two
-- workspaces would revoke consent in the wrong one (G5, G8).
-- Alphanumeric sender ids cannot receive replies and may repeat.
create unique index sender_numbers_phone_unique on sender_numbers (phone_number) where kind <> 'alphanumeric';
