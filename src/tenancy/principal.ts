import { DomainError, notFound } from '../shared/errors.ts';

/** Who is calling: derived from the API key, one of three scopes. */
export type Principal =
  | { scope: 'operator'; keyId: string }
  | { scope: 'organization'; keyId: string; organizationId: string }
  | { scope: 'workspace'; keyId: string; organizationId: string; workspaceId: string };

export function requireOperator(p: Principal): Extract<Principal, { scope: 'operator' }> {
  if (p.scope !== 'operator') throw new DomainError('forbidden', 'This needs an operator key.');
  return p;
}

/** Org admin keys for that organization, or the operator. Others: 404 if it is not theirs. */
export function requireOrgAdmin(p: Principal, organizationId?: string): void {
  switch (p.scope) {
    case 'operator':
      return;
    case 'organization':
      if (organizationId !== undefined && organizationId !== p.organizationId) {
        throw notFound('Organization');
      }
      return;
    case 'workspace':
      throw new DomainError('forbidden', 'This needs an organization admin key.');
    default: {
      const never: never = p;
      throw new Error(`unhandled principal ${String(never)}`);
    }
  }
}

/** The organization a tenant key belongs to; operators must name one. */
export function organizationOf(p: Principal): string | undefined {
  return p.scope === 'operator' ? undefined : p.organizationId;
}

/** The workspace a request acts on: a workspace key's own; others must pass one. */
export function requireWorkspaceKey(p: Principal): Extract<Principal, { scope: 'workspace' }> {
  if (p.scope !== 'workspace') {
    throw new DomainError('forbidden', 'This needs a workspace key.');
  }
  return p;
}

/** May this principal see this organization's data? (G8: others get 404.) */
export function canSeeOrganization(p: Principal, organizationId: string): boolean {
  return p.scope === 'operator' || p.organizationId === organizationId;
}

export function canSeeWorkspace(
  p: Principal,
  organizationId: string,
  workspaceId: string,
): boolean {
  switch (p.scope) {
    case 'operator':
      return true;
    case 'organization':
      return p.organizationId === organizationId;
    case 'workspace':
      return p.workspaceId === workspaceId;
    default: {
      const never: never = p;
      throw new Error(`unhandled principal ${String(never)}`);
    }
  }
}
