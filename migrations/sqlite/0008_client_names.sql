-- A sign-in client's name and home page, shown to users on the hosted pages ("Continue to
-- Mobile Banking", "Back to Mobile Banking"). Optional; the client id is shown when absent.
ALTER TABLE clients ADD COLUMN client_name TEXT;
ALTER TABLE clients ADD COLUMN client_uri TEXT;
