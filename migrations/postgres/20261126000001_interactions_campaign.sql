-- Reports (`herald stats`, `herald report`) aggregate a campaign's own events:
-- sends, opens, clicks, unsubscribes. Only those carry a campaign, so a partial
-- index stays small however many imported events the table holds.
CREATE INDEX interactions_campaign_kind_time ON interactions (campaign, kind, occurred_at)
    WHERE campaign IS NOT NULL;
