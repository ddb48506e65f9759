-- A client can be revoked (POST /v1/admin/clients/{clientId}/revoke): its tokens are refused from
-- then on, on every replica, because each authenticated request reads this column.
ALTER TABLE clients ADD COLUMN revoked_at BIGINT;
