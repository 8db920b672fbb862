export { ADVANCE_BATCH, advanceCampaign } from './advance.ts';
export { type CampaignRow, campaignEvents, contactVariables, findCampaign, listCampaigns } from './campaigns.store.ts';
export { CAMPAIGN_STATUSES, type CampaignStatus, campaignTransition, errorThresholdExceeded } from './lifecycle.ts';
export { createProgressFeed, type ProgressFeed, progressInterval } from './progressFeed.ts';
export { campaignProgress, previewContact, type Progress, type Quote, quoteCampaign, type Rendered, renderFor } from './progress.ts';
export {
  type CampaignInput,
  campaignInScope,
  cancelCampaign,
  checkCampaign,
  createCampaign,
  pauseCampaign,
  resumeCampaign,
  resumeCampaignsForCredits,
  resumeCampaignsForSubscription,
  resumeCampaignsForWorkspace,
  startCampaign,
  startScheduled,
  sweepCampaigns,
} from './service.ts';
export { parseTemplate, render } from './template.ts';
